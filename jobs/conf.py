"""Runlog's own settings, read in one place with their defaults.

`runlog_settings.NAME` always reflects the current Django settings: the cache is dropped
when a RUNLOG_* setting changes, so `override_settings` works in tests.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver


@dataclass(frozen=True)
class RunlogSettings:
    #: Worker threads per process that run launched jobs.
    WORKERS: int = 4
    #: Stored lines per job; later output is counted, not stored, after a marker line.
    MAX_LINES: int = 5_000_000
    #: Longer lines are wrapped into several stored lines (nothing is dropped).
    MAX_LINE_LENGTH: int = 32_768
    #: Unflushed writes a job may have before its print() blocks (backpressure).
    WRITER_BUFFER: int = 16_384
    #: Seconds between a running job's heartbeats.
    HEARTBEAT_INTERVAL: float = 5.0
    #: Seconds without a heartbeat after which a running job is marked lost.
    LOST_AFTER: float = 20.0
    #: Seconds between checks for cancel requests made by other processes.
    CANCEL_POLL_INTERVAL: float = 1.0
    #: Minimum seconds between two progress updates written for one job.
    PROGRESS_INTERVAL: float = 0.5
    #: Seconds the log writer keeps retrying an unreachable database before the run fails.
    DATABASE_RETRY_LIMIT: float = 60.0
    #: Seconds a cancelled job's subprocesses get between SIGTERM and SIGKILL.
    KILL_GRACE: float = 3.0
    #: Seconds a run gets to stop when its server shuts down (within gunicorn's graceful_timeout).
    SHUTDOWN_GRACE: float = 15.0
    #: Seconds between the poller's reads of runs that other processes run (their live tail).
    POLL_INTERVAL: float = 0.1
    #: Seconds between heartbeat comments on an idle event stream (at most 15, the contract).
    STREAM_HEARTBEAT: float = 10.0
    #: Live viewers of one process that may read the database at the same moment; the others
    #: wait their turn, so that a crowd of viewers never exhausts the database's connections.
    #: Under ASGI these are the threads that open streams too: more of them only contend
    #: for the process's GIL and answer a burst of streams later.
    VIEWER_DATABASE_SLOTS: int = 4
    #: Live streams (events, log.txt?follow=1) one process serves at once; past it a new
    #: one gets 503 with Retry-After. Under gthread each holds a thread (config/gunicorn.conf.py
    #: sets it below the thread count); under ASGI an idle one costs a few KB.
    MAX_STREAMS: int = 2000
    #: Threads per ASGI process that serve pages (and open streams); streams themselves
    #: are coroutines and hold none.
    PAGE_THREADS: int = 8
    #: Seconds a stream refused for capacity is told to wait before it tries again.
    STREAM_RETRY_AFTER: int = 5
    #: Import the demo jobs (demo.*).
    DEMO_JOBS: bool = True
    #: The site's address (e.g. https://runlog.example.com): `runjob` then prints a run's
    #: whole permalink, not only its path.
    BASE_URL: str = ""
    #: How long finished runs are kept, e.g. "90d" (see jobs.retention); None keeps them
    #: forever. Workers delete older ones once an hour.
    RETENTION: str | None = None
    #: On PostgreSQL, each web process listens for the announcements (NOTIFY) of stored
    #: lines and changed runs on one connection and reads them at once, instead of reading
    #: every POLL_INTERVAL (which stays the fallback while that connection is down). Runs
    #: are always announced, so processes with either value can run side by side.
    NOTIFY: bool = True


_cache: RunlogSettings | None = None


def _load() -> RunlogSettings:
    values: dict[str, Any] = {}
    for field in fields(RunlogSettings):
        setting_name = f"RUNLOG_{field.name}"
        if hasattr(settings, setting_name):
            values[field.name] = getattr(settings, setting_name)
    return RunlogSettings(**values)


class _Proxy:
    def __getattr__(self, name: str) -> Any:
        global _cache
        if _cache is None:
            _cache = _load()
        return getattr(_cache, name)


runlog_settings: RunlogSettings = _Proxy()  # type: ignore[assignment]


@receiver(setting_changed)
def _reset_cache(*, setting: str, **kwargs: Any) -> None:
    global _cache
    if setting.startswith("RUNLOG_"):
        _cache = None
