"""In-process fan-out of what happens to a run, to the viewers in this process.

Publishers: the flusher (each stored batch of a run of this process), the runner (a run of
this process started or ended) and the poller (lines and changes of runs that other
processes run, read from the database). A subscriber (a live viewer, or `runjob` echoing
its own run) gets one run's items through a bounded buffer: a subscriber that falls too
far behind is marked as overflowed and must catch up from the database instead, so a slow
viewer never holds memory or slows the job down.

A subscriber waits on a condition (threads) or an asyncio event (ASGI): an idle viewer
costs nothing until something is published or its wait times out. A run flooding a crowd
of viewers would wake each of them for every stored batch (a few lines each), which costs
the serving process more than the streams themselves; so after each take a subscriber
pauses in proportion to the run's number of subscribers (see `Subscription.pause`), and
the run's viewers cost at most about WAKEUPS_PER_SECOND wake-ups per second together.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
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


#: A coroutine's wait: its event loop and the event to set there.
_AsyncWaiter = tuple[asyncio.AbstractEventLoop, asyncio.Event]


class Subscription:
    def __init__(self, job_id: uuid.UUID, crowd: set[Subscription]) -> None:
        self.job_id = job_id
        #: All the run's subscribers in this process (the hub's set): their number sets the pause.
        self._crowd = crowd
        self._pause_until = 0.0
        self._coroutine = False  # waits with wait_async
        self.overflowed = False
        self._items: deque[Item] = deque()
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        # Set by an asyncio waiter: put() wakes it through its loop.
        self._async_waiter: _AsyncWaiter | None = None

    def _put(self, item: Item) -> _AsyncWaiter | None:
        """Add `item`, waking a waiting thread; the coroutine waiting, if any, for the
        caller to wake (`_put_all`)."""
        with self._ready:
            if len(self._items) >= SUBSCRIBER_BUFFER:
                self.overflowed = True
                self._items.clear()
            else:
                self._items.append(item)
            self._ready.notify_all()
            return self._async_waiter

    def take(self) -> tuple[list[Item], bool]:
        """What was published since the last take, and whether some of it was dropped
        (then the database has it)."""
        with self._lock:
            items = list(self._items)
            self._items.clear()
            overflowed, self.overflowed = self.overflowed, False
        self._pause_until = time.monotonic() + self.pause()
        return items, overflowed

    def pause(self) -> float:
        """Seconds to let items gather after a take before waking for more: 1 ms for a lone
        viewer, 0.2 s for 200 viewers of the run in this process, MAX_PAUSE from 500 on
        (for coroutines: 0.1 ms, 20 ms, ASYNC_MAX_PAUSE from 1,000 on)."""
        if self._coroutine:
            return min(ASYNC_MAX_PAUSE, len(self._crowd) / ASYNC_WAKEUPS_PER_SECOND)
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
        self._coroutine = True
        pause = self._pause_left(timeout)
        if pause:
            await asyncio.sleep(pause)
            timeout -= pause
        event = asyncio.Event()
        with self._lock:
            if self._items or self.overflowed:
                return True
            self._async_waiter = (asyncio.get_running_loop(), event)
        try:
            async with asyncio.timeout(timeout):  # no task of its own, unlike wait_for
                await event.wait()
            return True
        except TimeoutError:
            return False
        finally:
            with self._lock:
                self._async_waiter = None


def _put_all(subscriptions: Iterable[Subscription], item: Item) -> None:
    """Put `item` to each subscriber, waking the coroutines among them with one call per
    event loop: each call writes to the loop's wake-up pipe, and a run may have a thousand."""
    waiting: defaultdict[asyncio.AbstractEventLoop, list[asyncio.Event]] = defaultdict(list)
    for subscription in subscriptions:
        waiter = subscription._put(item)
        if waiter is not None:
            loop, event = waiter
            waiting[loop].append(event)
    for loop, events in waiting.items():
        loop.call_soon_threadsafe(_set_all, events)


def _set_all(events: list[asyncio.Event]) -> None:
    for event in events:
        event.set()


class LiveHub:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: defaultdict[uuid.UUID, set[Subscription]] = defaultdict(set)
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
            _put_all([subscription], StreamsClosing(job_id))
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            subscribers = self._subscribers.get(subscription.job_id)
            if subscribers is not None:
                subscribers.discard(subscription)
                if not subscribers:
                    del self._subscribers[subscription.job_id]

    def publish(self, item: Item) -> None:
        with self._lock:
            subscribers = list(self._subscribers.get(item.job_id, ()))
        _put_all(subscribers, item)

    def publish_read(self, item: StoredLines | JobChanged) -> bool:
        """Publish what the poller read of a run of another process, unless this process has
        started running it since (False): its own items are newer, and a read made before
        them must not follow them (its progress would go back)."""
        with self._lock:
            if item.job_id in self._local_jobs:
                return False
            # Put under the lock, so that run_started_here comes wholly before or after.
            _put_all(self._subscribers.get(item.job_id, ()), item)
            return True

    def close_streams(self) -> None:
        """Tell every viewer of this process, now and from now on, to end its stream."""
        with self._lock:
            self._closing = True
            subscribers = [(job_id, list(subs)) for job_id, subs in self._subscribers.items()]
        for job_id, subscriptions in subscribers:
            _put_all(subscriptions, StreamsClosing(job_id))

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

    def remote_jobs(self) -> set[uuid.UUID]:
        """Watched runs that this process does not run: the poller's work. The caller
        holds `watchers_changed`."""
        return set(self._subscribers) - self._local_jobs


hub = LiveHub()
