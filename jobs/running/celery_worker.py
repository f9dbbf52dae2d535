"""Runlog in a Celery worker (`celery -A config worker`), through Celery's worker signals.

- Jobs run in the pool's processes (prefork) or in the worker process itself (threads,
  solo): that is where capture and the supervisor start, after the fork, since threads do
  not survive one.
- A warm shutdown (SIGTERM, a deploy) waits for the running tasks. Runlog gives their runs
  RUNLOG_SHUTDOWN_GRACE seconds to finish, then stops them (jobs.running.runner). Prefork
  children do not hear the worker's SIGTERM, and one sent to them makes them exit at once
  (billiard's handler): the worker tells them with STOP_SIGNAL instead.
"""

from __future__ import annotations

import logging
import os
import signal
from typing import Any

from celery import signals

logger = logging.getLogger(__name__)

#: How a prefork worker tells its pool's processes that it is stopping (billiard leaves it alone).
STOP_SIGNAL = signal.SIGUSR2

_controller: Any = None  # this worker's WorkController, in its main process


def _pool_processes() -> list[int]:
    """The pids of the prefork pool's processes; none for the threads and solo pools."""
    pool = getattr(_controller, "pool", None)
    return list(pool.info.get("processes", [])) if pool is not None else []


def _remember_controller(sender: Any, **kwargs: Any) -> None:
    global _controller
    _controller = sender


def _start_in_pool_process(**kwargs: Any) -> None:
    from jobs.running.runner import get_runner

    runner = get_runner()
    runner.start()
    runner.shut_down_on(STOP_SIGNAL)


def _start_in_worker(**kwargs: Any) -> None:
    if not _pool_processes():  # threads or solo pool: jobs run in this process
        from jobs.running.runner import get_runner

        get_runner().start()


def _shutting_down(**kwargs: Any) -> None:
    children = _pool_processes()
    if children:
        for pid in children:
            try:
                os.kill(pid, STOP_SIGNAL)
            except ProcessLookupError:
                pass
        return
    from jobs.running.runner import get_runner

    get_runner().start_shutting_down()


signals.worker_init.connect(_remember_controller)
signals.worker_process_init.connect(_start_in_pool_process)
signals.worker_ready.connect(_start_in_worker)
signals.worker_shutting_down.connect(_shutting_down)
