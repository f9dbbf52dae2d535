"""In-process fan-out of what happens to a run, to the viewers in this process.

Publishers: the flusher (each stored batch of a run of this process), the runner (a run of
this process started or ended) and the poller (lines and changes of runs that other
processes run, read from the database). A subscriber (a live viewer, or `runjob` echoing
its own run) gets one run's items through a bounded buffer: a subscriber that falls too
far behind is marked as overflowed and must catch up from the database instead, so a slow
viewer never holds memory or slows the job down.

A subscriber waits on a condition (threads) or a future (ASGI): an idle viewer costs
nothing until something is published or its wait times out. A run flooding a crowd of
viewers would wake each of them for every stored batch (a few lines each), which costs
the serving process more than the streams themselves. So a thread pauses after each take
in proportion to the run's number of subscribers (see `Subscription.pause`), and the
coroutines of a run wake together in rounds spaced the same way (see `Crowd`): the run's
viewers cost at most about WAKEUPS_PER_SECOND (threads) or ASYNC_WAKEUPS_PER_SECOND
(coroutines) wake-ups per second together.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
import uuid
import weakref
from collections import defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from jobs.logstore.writer import Batch
from jobs.models import Row

#: Items a subscriber may hold before it is cut off and told to read the database.
SUBSCRIBER_BUFFER = 1024

#: Wake-ups per second that all the subscribers of one run may cost together, at most...
WAKEUPS_PER_SECOND = 1000
#: ...unless that would hold a line back longer than this (seconds): past 500 viewers, the
#: wake-ups grow with the viewers again, at 1 / MAX_PAUSE per viewer. Half a second is
#: still live to a reader (Jenkins polls a running build's log every few seconds).
MAX_PAUSE = 0.5
#: The same for viewers that are coroutines (ASGI): waking one costs a small part of waking
#: a thread, so they wake more often and lines reach a crowd sooner.
ASYNC_WAKEUPS_PER_SECOND = 10_000
ASYNC_MAX_PAUSE = 0.1
#: Seconds by which a coroutine's wait may outlast its timeout (the heartbeat's interval).
DEADLINE_GRAIN = 0.05


@dataclass(frozen=True)
class StoredLines:
    """Lines of a run of another process, read from the database by the poller."""

    job_id: uuid.UUID
    rows: list[Row]
    #: Shared by the run's viewers: its encodings, made once.
    cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class JobState:
    """The columns of a run's row that its viewers follow, as the poller read them."""

    status: str
    error: str
    cancel_requested: bool
    line_count: int
    progress_done: float | None
    progress_total: float | None
    progress_message: str


@dataclass(frozen=True)
class JobChanged:
    """The run's row changed (status, progress or line count). With `state`, the poller
    says what it is now, so that a crowd of viewers need not each read the row again."""

    job_id: uuid.UUID
    state: JobState | None = None
    #: time.monotonic() before the poller's read of `state` began, and once it had returned.
    read_started: float = 0.0
    read_at: float = 0.0


@dataclass(frozen=True)
class StreamsClosing:
    """This process is shutting down: end the stream; the client resumes elsewhere."""

    job_id: uuid.UUID


Item = Batch | StoredLines | JobChanged | StreamsClosing


def rows_of(item: Batch | StoredLines) -> list[Row]:
    if isinstance(item, StoredLines):
        return item.rows
    rows = item.cache.get("rows")
    if rows is None:  # made once for all the run's viewers (two making it at once is harmless)
        rows = item.cache["rows"] = [(number, stream, item.created_at, text) for number, stream, text in item.lines()]
    return rows


class Crowd:
    """A run's subscribers in this process, and the rounds in which its coroutines wake.

    A coroutine (an ASGI viewer) is not woken by each item: an item asks its event loop for
    a round, and a round wakes every coroutine of the run that has something, then none for
    the crowd's pause. A flood then costs each viewer one wake-up per round, with no timer
    of its own, and its lines go out to the whole crowd at once."""

    def __init__(self) -> None:
        self.subscriptions: set[Subscription] = set()
        self._lock = threading.Lock()
        self._next_round = 0.0  # time.monotonic() before which no round starts
        self._rounds_asked: set[asyncio.AbstractEventLoop] = set()

    def __len__(self) -> int:
        return len(self.subscriptions)

    def add(self, subscription: Subscription) -> None:
        with self._lock:
            self.subscriptions.add(subscription)

    def discard(self, subscription: Subscription) -> None:
        with self._lock:
            self.subscriptions.discard(subscription)

    def put(self, item: Item, only: Iterable[Subscription] | None = None) -> None:
        """Put `item` to each subscriber (or to `only` these); the loops of the coroutines
        among them that wait get one round each, whatever their number."""
        if only is None:
            with self._lock:
                only = list(self.subscriptions)
        loops = {loop for subscription in only if (loop := subscription._put(item)) is not None}
        for loop in loops:
            self.ask_round(loop)

    def round_gap(self) -> float:
        """Seconds between two rounds: 0.1 ms for a lone viewer, 20 ms for 200 viewers,
        ASYNC_MAX_PAUSE from 1,000 on."""
        return min(ASYNC_MAX_PAUSE, len(self.subscriptions) / ASYNC_WAKEUPS_PER_SECOND)

    def round_may_start(self) -> bool:
        return time.monotonic() >= self._next_round

    def ask_round(self, loop: asyncio.AbstractEventLoop) -> None:
        """From any thread: a round in `loop`, as soon as the pause allows."""
        with self._lock:
            if loop in self._rounds_asked:
                return
            self._rounds_asked.add(loop)
        try:
            loop.call_soon_threadsafe(self._schedule_round, loop)
        except RuntimeError:  # the loop has closed: nothing of it will run again
            with self._lock:
                self._rounds_asked.discard(loop)

    def _schedule_round(self, loop: asyncio.AbstractEventLoop) -> None:
        delay = self._next_round - time.monotonic()
        if delay > 0:
            loop.call_later(delay, self._round, loop)
        else:
            self._round(loop)

    def _round(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            self._rounds_asked.discard(loop)
            self._next_round = time.monotonic() + self.round_gap()
            subscriptions = list(self.subscriptions)
        for subscription in subscriptions:
            subscription._wake_in(loop)


class Subscription:
    def __init__(self, job_id: uuid.UUID, crowd: Crowd) -> None:
        self.job_id = job_id
        #: All the run's subscribers in this process: their number sets the pause.
        self._crowd = crowd
        self._pause_until = 0.0
        self._coroutine = False  # waits with wait_async
        self.overflowed = False
        self._items: deque[Item] = deque()
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        # Set while a coroutine waits: the crowd's next round in its loop wakes it.
        self._waiter: asyncio.Future[bool] | None = None
        self._waiter_loop: asyncio.AbstractEventLoop | None = None

    def _put(self, item: Item) -> asyncio.AbstractEventLoop | None:
        """Add `item`, waking a waiting thread; the loop of the coroutine waiting, if any,
        which the caller asks for a round (`Crowd.put`)."""
        with self._lock:
            if len(self._items) >= SUBSCRIBER_BUFFER:
                self.overflowed = True
                self._items.clear()
            else:
                self._items.append(item)
            if self._coroutine:
                return self._waiter_loop if self._waiter is not None else None
            self._ready.notify_all()
            return None

    def take(self) -> tuple[list[Item], bool]:
        """What was published since the last take, and whether some of it was dropped
        (then the database has it)."""
        with self._lock:
            items = list(self._items)
            self._items.clear()
            overflowed, self.overflowed = self.overflowed, False
        if not self._coroutine:
            self._pause_until = time.monotonic() + self.pause()
        return items, overflowed

    def pause(self) -> float:
        """Seconds a thread lets items gather after a take before it wakes for more: 1 ms
        for a lone viewer, 0.2 s for 200 viewers of the run in this process, MAX_PAUSE from
        500 on. (Coroutines wake in the crowd's rounds instead: `Crowd`.)"""
        return min(MAX_PAUSE, len(self._crowd) / WAKEUPS_PER_SECOND)

    def _pause_left(self, timeout: float) -> float:
        return max(0.0, min(timeout, self._pause_until - time.monotonic()))

    def wait(self, timeout: float) -> bool:
        """Block until something is published (True) or `timeout` passes (False)."""
        pause = self._pause_left(timeout)
        if pause:
            time.sleep(pause)  # publishers meanwhile only append: no thread is woken
            timeout -= pause
        with self._ready:
            if self._items or self.overflowed:
                return True
            return self._ready.wait(timeout)

    async def wait_async(self, timeout: float) -> bool:
        """As `wait`, in a coroutine: until the run's next round that finds something here."""
        self._coroutine = True
        loop = asyncio.get_running_loop()
        with self._lock:
            ready = bool(self._items or self.overflowed)
            if ready and self._crowd.round_may_start():
                return True
            waiter = self._waiter = loop.create_future()
            self._waiter_loop = loop
        if ready:
            self._crowd.ask_round(loop)
        try:
            return await _deadlines(loop).wait(loop, waiter, timeout)
        finally:
            with self._lock:
                self._waiter = None

    def _wake_in(self, loop: asyncio.AbstractEventLoop) -> None:
        """In a round of `loop`: wake this coroutine if it waits there and has something."""
        with self._lock:
            waiter = self._waiter
            if waiter is None or self._waiter_loop is not loop or not (self._items or self.overflowed):
                return
            self._waiter = None
        if not waiter.done():
            waiter.set_result(True)


class _Deadlines:
    """The timeouts of a loop's waiting coroutines, DEADLINE_GRAIN apart: the crowd's
    coroutines, woken together, time out together on one timer."""

    def __init__(self) -> None:
        self._due: dict[int, set[asyncio.Future[bool]]] = {}

    async def wait(self, loop: asyncio.AbstractEventLoop, waiter: asyncio.Future[bool], timeout: float) -> bool:
        """What `waiter` is set to, or False once `timeout` (rounded up to the grain) passes."""
        slot = math.ceil((loop.time() + timeout) / DEADLINE_GRAIN)
        waiters = self._due.get(slot)
        if waiters is None:
            waiters = self._due[slot] = set()
            loop.call_at(slot * DEADLINE_GRAIN, self._expire, slot)
        waiters.add(waiter)
        try:
            return await waiter
        finally:
            waiters.discard(waiter)

    def _expire(self, slot: int) -> None:
        for waiter in self._due.pop(slot, ()):
            if not waiter.done():
                waiter.set_result(False)


#: Each loop's timeouts, forgotten with the loop.
_loop_deadlines: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Deadlines] = weakref.WeakKeyDictionary()


def _deadlines(loop: asyncio.AbstractEventLoop) -> _Deadlines:
    deadlines = _loop_deadlines.get(loop)
    if deadlines is None:
        deadlines = _loop_deadlines[loop] = _Deadlines()
    return deadlines


class LiveHub:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: defaultdict[uuid.UUID, Crowd] = defaultdict(Crowd)
        self._local_jobs: set[uuid.UUID] = set()
        self._closing = False
        #: Notified when a run gains its first subscriber (the poller waits on it).
        self.watchers_changed = threading.Condition(self._lock)

    def subscribe(self, job_id: uuid.UUID) -> Subscription:
        with self._lock:
            crowd = self._subscribers[job_id]
            subscription = Subscription(job_id, crowd)
            crowd.add(subscription)
            self.watchers_changed.notify_all()
            closing = self._closing
        if closing:
            crowd.put(StreamsClosing(job_id), only=[subscription])
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            crowd = self._subscribers.get(subscription.job_id)
            if crowd is not None:
                crowd.discard(subscription)
                if not crowd:
                    del self._subscribers[subscription.job_id]

    def publish(self, item: Item) -> None:
        with self._lock:
            crowd = self._subscribers.get(item.job_id)
        if crowd is not None:
            crowd.put(item)

    def publish_read(self, item: StoredLines | JobChanged) -> bool:
        """Publish what the poller read of a run of another process, unless this process has
        started running it since (False): its own items are newer, and a read made before
        them must not follow them (its progress would go back)."""
        with self._lock:
            if item.job_id in self._local_jobs:
                return False
            # Put under the lock, so that run_started_here comes wholly before or after.
            crowd = self._subscribers.get(item.job_id)
            if crowd is not None:
                crowd.put(item)
            return True

    def close_streams(self) -> None:
        """Tell every viewer of this process, now and from now on, to end its stream."""
        with self._lock:
            self._closing = True
            crowds = list(self._subscribers.items())
        for job_id, crowd in crowds:
            crowd.put(StreamsClosing(job_id))

    def run_started_here(self, job_id: uuid.UUID) -> None:
        """From now on this process publishes the run's lines and changes itself."""
        with self._lock:
            self._local_jobs.add(job_id)
        self.publish(JobChanged(job_id))

    def run_ended_here(self, job_id: uuid.UUID) -> None:
        """The run's final status is saved: tell its viewers, stop treating it as ours."""
        with self._lock:
            self._local_jobs.discard(job_id)
        self.publish(JobChanged(job_id))

    def round_gap(self, job_ids: Iterable[uuid.UUID]) -> float:
        """The longest gap between the rounds of these runs' crowds (0 for none). The
        caller holds `watchers_changed`."""
        return max((crowd.round_gap() for job_id in job_ids if (crowd := self._subscribers.get(job_id))), default=0.0)

    def remote_jobs(self) -> set[uuid.UUID]:
        """Watched runs that this process does not run: the poller's work. The caller
        holds `watchers_changed`."""
        return set(self._subscribers) - self._local_jobs


hub = LiveHub()
