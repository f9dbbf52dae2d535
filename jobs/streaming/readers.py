"""The threads that read the database for a process's viewers under ASGI, and the reads
they share.

A crowd of viewers of one run asks for the same reads (its row, its lines after the same
offset) at the same moment: a burst of viewers opening, or late joiners replaying. A read
with a key is shared by every viewer that asks for it while it still waits its turn for a
thread: it starts after each of them asked (and so after each subscribed to the hub), so
its result is as fresh as a read of their own would be, and the database and the event
loop do that work once.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.db import connection

from jobs.conf import runlog_settings
from jobs.logstore.dbretry import retrying

#: Seconds a viewer's read is retried on fresh connections when its connection fails: a
#: kept connection may have been dropped since its last read (a database restart, a proxy).
READ_RETRY = 1.0

_lock = threading.Lock()
_readers: ThreadPoolExecutor | None = None


def viewer_readers() -> ThreadPoolExecutor:
    """VIEWER_DATABASE_SLOTS threads, each keeping its connection (jobs.asgi also opens
    streams on them)."""
    global _readers
    with _lock:
        if _readers is None:
            _readers = ThreadPoolExecutor(runlog_settings.VIEWER_DATABASE_SLOTS, thread_name_prefix="runlog-viewer")
        return _readers


class _Queued:
    """A shared read: joinable until a thread starts it."""

    __slots__ = ("future", "started")

    def __init__(self) -> None:
        self.future: asyncio.Future[Any] | None = None
        self.started = False


#: Shared reads that wait for a thread, by event loop and key.
_queued: dict[tuple[asyncio.AbstractEventLoop, Hashable], _Queued] = {}


async def read(call: Callable[[], Any], key: Hashable | None = None) -> Any:
    """`call()` on a reader thread; with a key, joined with an identical read not yet started."""
    loop = asyncio.get_running_loop()
    if key is None:
        return await loop.run_in_executor(viewer_readers(), _read, call)
    slot = (loop, key)
    with _lock:
        queued = _queued.get(slot)
        if queued is None or queued.started:
            queued = _queued[slot] = _Queued()
            joined = False
        else:
            joined = True
    if not joined:
        queued.future = loop.run_in_executor(viewer_readers(), _start_shared, slot, queued, call)
    assert queued.future is not None  # set in this loop's thread before any other viewer looks
    # A viewer that leaves must not cancel the read of the others.
    return await asyncio.shield(queued.future)


def _start_shared(slot: tuple[asyncio.AbstractEventLoop, Hashable], queued: _Queued, call: Callable[[], Any]) -> Any:
    with _lock:
        queued.started = True
        if _queued.get(slot) is queued:
            del _queued[slot]
    return _read(call)


def _read(call: Callable[[], Any]) -> Any:
    try:
        return retrying(call, READ_RETRY, "read for a viewer")
    except Exception:
        connection.close()  # it may be broken: the next read opens another
        raise
