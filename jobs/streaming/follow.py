"""What a viewer of a run receives: its stored lines after an offset, then (when following)
its live lines, changes of status and progress, heartbeats, and the end.

The algorithm is written once, as a plan: a generator that yields the events to send and
two kinds of steps, `Read` (a database read) and `Wait` (for the hub). A driver carries out
the steps: `events()` with blocking calls in the request's thread (WSGI), `events_async()`
with awaits (ASGI), so that one algorithm serves both without a thread per viewer on ASGI.

Exactly once, in order, with no gap (the resume contract, docs/architecture.md):
- The viewer subscribes to the hub before it reads anything from the database, so a line
  stored after the read is published to it, and a line stored before is in the read.
- Every line sent has number last + 1: lines the hub repeats are skipped; when the hub's
  next line is further on (the viewer subscribed mid-batch, overflowed, or the poller met
  the run late), the gap is read from the database first.
- The end is sent only after the final status is seen, and the final status is saved only
  after every line is stored (jobs.running.execution), so the last read has every line.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Generator, Hashable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

from django.db import connection

from jobs.conf import runlog_settings
from jobs.logstore.hub import JobChanged, JobState, StoredLines, StreamsClosing, Subscription, hub, rows_of
from jobs.logstore.writer import Batch
from jobs.models import Job, LogLine, Row
from jobs.streaming import readers
from jobs.streaming.poller import poller

#: Lines per database read while replaying: large enough to stream fast, small enough to
#: keep a viewer's memory flat whatever the log's size.
REPLAY_CHUNK = 10_000

#: Seconds between checks that a WSGI client is still connected while its stream is idle:
#: a client that left frees its thread within this. Each check wakes the viewer's thread,
#: which is most of what an idle viewer costs, hence not more often.
DISCONNECT_CHECK = 5.0


# --- Events: what the viewer is sent ----------------------------------------------------------


@dataclass(frozen=True)
class Lines:
    rows: list[Row]
    #: The live item these rows are, all of it: its encodings are shared by its viewers.
    source: Batch | StoredLines | None = None


@dataclass(frozen=True)
class Status:
    job: Job


@dataclass(frozen=True)
class Progress:
    done: float | None
    total: float | None
    message: str


@dataclass(frozen=True)
class Heartbeat:
    pass


@dataclass(frozen=True)
class Done:
    job: Job


Event = Lines | Status | Progress | Heartbeat | Done


# --- Steps: what the plan needs from its driver ---------------------------------------------


@dataclass(frozen=True)
class Read:
    """Run `call` (a database read) and send its result back. Viewers asking for reads
    with the same `key` at once may share one (jobs.streaming.readers)."""

    call: Callable[[], Any]
    key: Hashable | None = None


@dataclass(frozen=True)
class Wait:
    """Send back what the hub published next, with its overflow flag, or None after a
    heartbeat interval with nothing."""


Plan = Generator[Event | Read | Wait, Any, int]


def load_job(job_id: uuid.UUID) -> Job | None:
    return Job.objects.select_related("launched_by", "cancelled_by").filter(pk=job_id).first()


def read_lines(job_id: uuid.UUID, after: int) -> StoredLines:
    """A chunk of stored lines, with a cache for the encodings of the viewers that share it."""
    return StoredLines(job_id, LogLine.objects.rows_after(job_id, after, REPLAY_CHUNK))


def replay(job_id: uuid.UUID, after: int) -> Plan:
    """The stored lines after `after`, in chunks. Returns the last number sent."""
    while True:
        chunk: StoredLines = yield Read(partial(read_lines, job_id, after), key=("lines", job_id, after))
        rows = chunk.rows
        if rows:
            yield Lines(rows, source=chunk)
            after = rows[-1][0]
        if len(rows) < REPLAY_CHUNK:
            return after


def follow(job_id: uuid.UUID, after: int) -> Plan:
    """The run's status, its lines after `after`, then everything live until it ends.
    The driver has subscribed to the hub before it starts this plan."""
    job, row_read_at, row_read_done = yield from _read_row(job_id)
    if job is None:
        return after
    yield Status(job)
    status_sent = _status_view(job)
    progress = _ProgressSent()
    yield from progress.changed(_progress(job))
    # The row was read after subscribing: lines past its count will be published, so a
    # viewer that has them all (a reconnect, or a run yet to print) has nothing to read.
    last = (yield from replay(job_id, after)) if job.line_count > after else after
    while not job.is_finished:
        published = yield Wait()
        if published is None:
            yield Heartbeat()
            continue
        items, overflowed = published
        reload = overflowed  # the hub dropped items: read the row (and the lines) again
        stored = last  # lines the run is known to have stored
        closing = False  # the server is shutting down; the client resumes from `last`
        for item in items:
            if isinstance(item, StreamsClosing):
                closing = True
                break
            if isinstance(item, JobChanged):
                # The poller's news read before the viewer's own read of the row is older than
                # what the viewer has (its progress would go back); news read while the viewer
                # read the row may be older or newer: the viewer reads the row again.
                if item.state is not None and item.read_at < row_read_at:
                    continue
                if item.state is None or not _same_status(job, item.state) or item.read_started < row_read_done:
                    reload = True
                    continue
                # The poller's news of a run of another process: no read of our own.
                yield from progress.changed(_progress(item.state))
                stored = max(stored, item.state.line_count)
                continue
            last = yield from _send_new_lines(job_id, last, item)
            if isinstance(item, Batch) and item.progress is not None:
                yield from progress.changed(Progress(item.progress.done, item.progress.total, item.progress.message))
        if not reload:
            if closing:
                return last
            if stored > last:  # the poller publishes a run's lines before the change that counts them
                last = yield from replay(job_id, last)
            continue
        job, row_read_at, row_read_done = yield from _read_row(job_id)
        if job is None:
            return last
        if job.is_finished:
            break  # its last lines first, then its final status (even while closing: it ended first)
        if closing:
            return last
        if _status_view(job) != status_sent:
            yield Status(job)
            status_sent = _status_view(job)
        yield from progress.changed(_progress(job))
        if overflowed or job.line_count > last:
            last = yield from replay(job_id, last)
    last = yield from replay(job_id, last)
    yield from progress.changed(_progress(job))
    if _status_view(job) != status_sent:
        yield Status(job)
    yield Done(job)
    return last


def _read_row(job_id: uuid.UUID) -> Generator[Read, Any, tuple[Job | None, float, float]]:
    """The run's row, with the time.monotonic() before the read started and after it returned."""
    started = time.monotonic()
    job: Job | None = yield Read(partial(load_job, job_id), key=("job", job_id))
    return job, started, time.monotonic()


def _send_new_lines(job_id: uuid.UUID, last: int, item: Batch | StoredLines) -> Plan:
    rows = rows_of(item)
    if rows and rows[0][0] > last + 1:
        last = yield from replay(job_id, last)  # the gap, and maybe these lines too
    if not rows or rows[-1][0] <= last:
        return last
    if rows[0][0] == last + 1:
        yield Lines(rows, source=item)  # the whole item: its encoding is shared
    else:
        yield Lines([row for row in rows if row[0] > last])
    return rows[-1][0]


def _status_view(job: Job) -> tuple[Any, ...]:
    return (job.status, job.error, job.cancel_requested, job.started_at, job.finished_at)


def _same_status(job: Job, state: JobState) -> bool:
    """Whether the run's status is still the one of `job` (its times change only with it)."""
    return (job.status, job.error, job.cancel_requested) == (state.status, state.error, state.cancel_requested)


def _progress(run: Job | JobState) -> Progress:
    return Progress(run.progress_done, run.progress_total, run.progress_message)


class _ProgressSent:
    """The progress the viewer has: the same value comes from the run's row and from its
    batches, and is sent once."""

    def __init__(self) -> None:
        self.sent = Progress(None, None, "")

    def changed(self, progress: Progress) -> list[Progress]:
        if progress == self.sent:
            return []
        self.sent = progress
        return [progress]


# --- Drivers ------------------------------------------------------------------------------------

_slots: threading.BoundedSemaphore | None = None
_slots_lock = threading.Lock()


def _database_slots() -> threading.BoundedSemaphore:
    global _slots
    with _slots_lock:
        if _slots is None:
            _slots = threading.BoundedSemaphore(runlog_settings.VIEWER_DATABASE_SLOTS)
        return _slots


class ViewerDatabase:
    """A viewer's use of the database, bounded per process by VIEWER_DATABASE_SLOTS: it
    holds a connection (and one of the slots) while it reads, and gives both back before
    it waits for live lines, so that a thousand idle viewers hold no connection, and a
    crowd arriving at once opens no more connections than there are slots (the endpoints
    read the session and the permission under a slot too: jobs.streaming.endpoints)."""

    def __init__(self) -> None:
        self._holding = False

    def acquire(self) -> None:
        if not self._holding:
            _database_slots().acquire()
            self._holding = True

    def read(self, call: Callable[[], Any]) -> Any:
        self.acquire()
        return call()

    def release(self) -> None:
        if self._holding:
            self._holding = False
            try:
                connection.close()
            finally:
                _database_slots().release()


def _start(job_id: uuid.UUID, after: int, live: bool) -> tuple[Subscription | None, Plan]:
    if not live:
        return None, replay(job_id, after)
    subscription = hub.subscribe(job_id)  # before any read: see the module's docstring
    poller.ensure_started()  # in case another process runs it
    return subscription, follow(job_id, after)


def _next_step(plan: Plan, result: Any) -> Event | Read | Wait | None:
    """Send the plan the result of its last step; its next step, or None when it is done."""
    try:
        return plan.send(result)
    except StopIteration:
        return None


def events(
    job_id: uuid.UUID, after: int, *, live: bool, client_gone: Callable[[], bool] | None = None
) -> Iterator[Event]:
    """Carry out the plan with blocking calls. `client_gone` tells, while the stream is
    idle, whether the client has left, so that its thread is freed before the next heartbeat."""
    subscription, plan = _start(job_id, after, live)
    database = ViewerDatabase()
    try:
        step = _next_step(plan, None)
        while step is not None:
            if isinstance(step, Read):
                step = _next_step(plan, database.read(step.call))
            elif isinstance(step, Wait):
                assert subscription is not None  # only a live plan waits
                database.release()
                published = _wait(subscription, client_gone)
                if published is _CLIENT_GONE:
                    return
                step = _next_step(plan, published)
            else:
                yield step
                step = _next_step(plan, None)
    finally:
        plan.close()
        database.release()
        if subscription is not None:
            hub.unsubscribe(subscription)


_CLIENT_GONE = object()


def _wait(subscription: Subscription, client_gone: Callable[[], bool] | None) -> Any:
    deadline = time.monotonic() + runlog_settings.STREAM_HEARTBEAT
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        slice_ = min(remaining, DISCONNECT_CHECK) if client_gone is not None else remaining
        if subscription.wait(slice_):
            return subscription.take()
        if client_gone is not None and client_gone():
            return _CLIENT_GONE


async def events_async(job_id: uuid.UUID, after: int, *, live: bool) -> AsyncIterator[list[Event]]:
    """Carry out the plan with awaits (ASGI), yielding the events in bursts: all those
    that come before the plan's next read or wait, to be sent together (a wake-up of a
    crowd's viewer brings many batches). Database reads go to the process's viewer readers
    (VIEWER_DATABASE_SLOTS threads, each keeping its connection), so a crowd of viewers
    waits its turn there, sharing the reads it makes alike, and an idle viewer holds
    neither thread nor connection. A client
    that leaves cancels this generator, which cleans up here."""
    subscription, plan = _start(job_id, after, live)
    burst: list[Event] = []
    try:
        step = _next_step(plan, None)
        while step is not None:
            if isinstance(step, Event):
                burst.append(step)
                step = _next_step(plan, None)
                continue
            if burst:
                yield burst
                burst = []
            if isinstance(step, Read):
                step = _next_step(plan, await readers.read(step.call, step.key))
            else:
                assert subscription is not None  # only a live plan waits
                ready = await subscription.wait_async(runlog_settings.STREAM_HEARTBEAT)
                step = _next_step(plan, subscription.take() if ready else None)
        if burst:
            yield burst
    finally:
        plan.close()
        if subscription is not None:
            hub.unsubscribe(subscription)
