"""The `threads` Tasks backend: tasks run in RUNLOG_WORKERS threads of the process that
enqueued them. No other service is needed; the runs die with the process (its queued and
running runs end lost, once their heartbeat is stale), which is why workers exist."""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any, ParamSpec, TypeVar

from django.utils import timezone

from jobs.conf import runlog_settings
from jobs.tasks_compat import BaseTaskBackend, Task, TaskResult, TaskResultStatus, get_random_id, task_enqueued

logger = logging.getLogger(__name__)

T = TypeVar("T")
P = ParamSpec("P")

_Call = tuple[Task[Any, Any], tuple[Any, ...], dict[str, Any]]


class ThreadPool:
    """Daemon threads that call queued tasks one after another, started on first use."""

    def __init__(self) -> None:
        self._calls: queue.SimpleQueue[_Call] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def submit(self, call: _Call) -> None:
        with self._lock:
            if not self._threads:
                for index in range(runlog_settings.WORKERS):
                    thread = threading.Thread(target=self._work, name=f"runlog-worker-{index}", daemon=True)
                    thread.start()
                    self._threads.append(thread)
        self._calls.put(call)

    def _work(self) -> None:
        while True:
            task, args, kwargs = self._calls.get()
            try:
                task.call(*args, **kwargs)
            except Exception:
                logger.exception("Task %s failed", task.module_path)


_pool = ThreadPool()


class ThreadsBackend(BaseTaskBackend):
    """Runs each task in a thread of this process, in the order they were enqueued."""

    supports_defer = False
    supports_async_task = False
    supports_get_result = False
    supports_priority = False

    def enqueue(self, task: Task[P, T], args: P.args, kwargs: P.kwargs) -> TaskResult[T]:  # type: ignore[valid-type]
        self.validate_task(task)
        result: TaskResult[T] = TaskResult(
            task=task,
            id=get_random_id(),
            status=TaskResultStatus.READY,
            enqueued_at=timezone.now(),
            started_at=None,
            last_attempted_at=None,
            finished_at=None,
            args=list(args),
            kwargs=dict(kwargs),
            backend=self.alias,
            errors=[],
            worker_ids=[],
        )
        _pool.submit((task, tuple(args), dict(kwargs)))
        task_enqueued.send(type(self), task_result=result)
        return result
