"""This process's runner: RUNLOG_WORKERS worker threads that run launched jobs.

Jobs reach it through `submit()` once the transaction that created them has committed.
A worker claims the run (queued -> running) with a conditional UPDATE, so a run is never
started twice, then executes it in its own thread with capture bound to that thread.
`shut_down()` ends every run of the process truthfully before it exits (gunicorn's SIGTERM).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid

from jobs.conf import runlog_settings
from jobs.logstore.dbretry import one_line
from jobs.logstore.hub import hub
from jobs.logstore.writer import LogWriter
from jobs.models import Job, JobStatus
from jobs.running import capture
from jobs.running.control import CancelReason
from jobs.running.execution import close_thread_connection, execute
from jobs.running.supervisor import Supervisor, end_run, process_identity

logger = logging.getLogger(__name__)


class Runner:
    def __init__(self) -> None:
        self.identity = process_identity()
        self.supervisor = Supervisor(self.identity)
        self._queue: queue.SimpleQueue[uuid.UUID] = queue.SimpleQueue()
        self._workers: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._shutting_down = False
        self._shutdown_lock = threading.Lock()

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
        if self._shutting_down:
            return job  # shut_down() ends it as never started
        if not job.claim(self.identity):
            logger.info("Job %s was not queued any more; not running it", job.id)
            job.refresh_from_db()
            return job
        return execute(job, self.supervisor)

    def shut_down(self, grace: float | None = None) -> None:
        """End this process's runs before it exits; idempotent, and a second caller waits
        for the first. Each running job is asked to stop (it ends failed, after its lines
        are stored, with a system line saying the server shut down) and gets `grace`
        seconds (RUNLOG_SHUTDOWN_GRACE) to do so. A job still going after that (stuck in a
        C call, say) is ended here the same way, its output so far stored. Runs still queued
        end failed, never started. Then this process's viewers are told to reconnect."""
        with self._shutdown_lock:
            if self._shutting_down:
                return
            self._shutting_down = True
            grace = runlog_settings.SHUTDOWN_GRACE if grace is None else grace
            for context in self.supervisor.running():
                context.cancel(CancelReason.SHUTDOWN)
            deadline = time.monotonic() + grace
            while self.supervisor.running() and time.monotonic() < deadline:
                time.sleep(0.05)  # only while shutting down: jobs end at their own pace
            for context in self.supervisor.running():
                _end_stuck_run(context.job_id, context.writer, grace)
            queued = Job.objects.owned_by(self.identity).filter(status=JobStatus.QUEUED)
            for job_id in queued.values_list("pk", flat=True):
                end_run(job_id, JobStatus.FAILED, "Not started: the server shut down before the run began.")
            hub.close_streams()
            close_thread_connection()

    def _work(self) -> None:
        while True:
            job_id = self._queue.get()
            try:
                job = Job.objects.filter(pk=job_id).first()
                if job is not None:
                    self.run(job)
            except Exception as exc:
                logger.exception("Runlog worker failed to run job %s", job_id)
                reason = f"The run's end could not be recorded: {one_line(exc)}"
                self.supervisor.end_later(job_id, JobStatus.FAILED, reason)
            finally:
                close_thread_connection()


def _end_stuck_run(job_id: uuid.UUID, writer: LogWriter, grace: float) -> None:
    message = f"Interrupted: the server shut down, and the job did not stop within {grace:g} s."
    logger.warning("Job %s: %s", job_id, message)
    writer.write_system(message)
    writer.close()  # stores every line written so far; later writes go to the process's stderr
    job = Job.objects.get(pk=job_id)
    job.finish(JobStatus.FAILED, message)


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
