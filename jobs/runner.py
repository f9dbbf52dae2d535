"""This process's runner: RUNLOG_WORKERS worker threads that run launched jobs.

Jobs reach it through `submit()` once the transaction that created them has committed.
A worker claims the run (queued -> running) with a conditional UPDATE, so a run is never
started twice, then executes it in its own thread with capture bound to that thread.
"""

from __future__ import annotations

import logging
import queue
import threading
import uuid

from jobs import capture
from jobs.conf import runlog_settings
from jobs.control import CancelReason
from jobs.execution import close_thread_connection, execute
from jobs.models import Job
from jobs.supervisor import Supervisor, process_identity

logger = logging.getLogger(__name__)


class Runner:
    def __init__(self) -> None:
        self.identity = process_identity()
        self.supervisor = Supervisor(self.identity)
        self._queue: queue.SimpleQueue[uuid.UUID] = queue.SimpleQueue()
        self._workers: list[threading.Thread] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start the worker threads (once) and the supervisor (again, after stop())."""
        with self._lock:
            capture.install()
            self.supervisor.start()
            if self._workers:
                return
            for index in range(runlog_settings.WORKERS):
                worker = threading.Thread(target=self._work, name=f"runlog-worker-{index}", daemon=True)
                worker.start()
                self._workers.append(worker)

    def stop(self) -> None:
        """Stop supervising (heartbeats, timeouts, lost-run sweeps) until start() again.
        Runs in progress go on; tests and benchmarks call it before dropping a database."""
        self.supervisor.stop()

    def submit(self, job_id: uuid.UUID) -> None:
        self._queue.put(job_id)

    def cancel(self, job_id: uuid.UUID) -> bool:
        """Ask a run to stop, whichever process runs it: the flag in the database reaches
        another process through its supervisor's poll; a run of this process stops at once.
        False if the run had already finished."""
        requested = Job.objects.filter(pk=job_id).unfinished().update(cancel_requested=True)
        self.supervisor.cancel(job_id, CancelReason.REQUESTED)
        return bool(requested)

    def run(self, job: Job) -> Job:
        """Claim a queued run for this process and run it in the calling thread."""
        if not job.claim(self.identity):
            logger.info("Job %s was not queued any more; not running it", job.id)
            job.refresh_from_db()
            return job
        return execute(job, self.supervisor)

    def _work(self) -> None:
        while True:
            job_id = self._queue.get()
            try:
                job = Job.objects.filter(pk=job_id).first()
                if job is not None:
                    self.run(job)
            except Exception:
                logger.exception("Runlog worker failed to run job %s", job_id)
            finally:
                close_thread_connection()


_runner: Runner | None = None
_runner_lock = threading.Lock()


def get_runner() -> Runner:
    """This process's runner (created, not started, on first use)."""
    global _runner
    with _runner_lock:
        if _runner is None:
            _runner = Runner()
        return _runner


def start() -> Runner:
    runner = get_runner()
    runner.start()
    return runner
