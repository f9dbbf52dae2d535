"""This process's side of running jobs: its identity, its supervisor, and executing runs.

Whatever executes Runlog's task (jobs.tasks.run_job: a thread of the launching process, a
`db_worker`, a Celery worker) calls `run_queued()`, which claims the run (queued ->
running) with a conditional UPDATE, so a run is executed once however often its task is
delivered, then executes it in the calling thread with capture bound to that thread.

Two ways to stop, both ending every run of the process truthfully:
- `shut_down()`: a web server running jobs in its own threads is stopping (gunicorn's
  SIGTERM): its runs are asked to stop at once, its queued runs end as never started.
- `shut_down_worker()`: a worker is stopping (a deploy): its runs get RUNLOG_SHUTDOWN_GRACE
  seconds to finish, then are stopped; runs no worker has taken stay queued for another.
"""

from __future__ import annotations

import logging
import signal
import threading
import uuid
from types import FrameType
from typing import Any

from jobs.conf import runlog_settings
from jobs.logstore.dbretry import one_line
from jobs.logstore.hub import hub
from jobs.logstore.notify import announce
from jobs.logstore.writer import LogWriter
from jobs.models import Job, JobStatus
from jobs.running import capture
from jobs.running.control import CancelReason
from jobs.running.execution import close_thread_connection, execute, worker_shutdown_message
from jobs.running.supervisor import Supervisor, end_run, process_identity

logger = logging.getLogger(__name__)

#: Seconds a worker's runs get to stop once cancelled at the end of the grace period (their
#: subprocesses get RUNLOG_KILL_GRACE of it) before they are ended where they stand.
STOP_WAIT = 5.0


class Runner:
    def __init__(self) -> None:
        self.identity = process_identity()
        self.supervisor = Supervisor(self.identity)
        self._lock = threading.Lock()
        self._refusing = False  # the server is shutting down: runs handed over now never start
        self._shutdown_lock = threading.Lock()
        self._shut_down = False
        self._signals_chained = False

    def supervise(self) -> None:
        """Start the supervisor only (heartbeats, lost runs): what a process that executes
        no job runs, so that a dead worker's runs are noticed by every live process."""
        self.supervisor.start()

    def start(self) -> None:
        """Get ready to execute runs: capture installed, supervisor running."""
        with self._lock:
            capture.install()
            self.supervisor.start(retention=True)

    def stop(self) -> None:
        """Stop supervising (heartbeats, timeouts, lost-run sweeps) until start() again.
        Runs in progress go on; tests and benchmarks call it before dropping a database."""
        self.supervisor.stop()

    def run(self, job: Job) -> Job:
        """Claim a queued run for this process and run it in the calling thread."""
        if self._refusing:
            return job  # shut_down() ends it as never started
        if not job.claim(self.identity):
            job.refresh_from_db()
            logger.warning("Job %s is %s, not queued: not running it again", job.id, job.status)
            return job
        announce(job.id, job.line_count)
        return execute(job, self.supervisor)

    def run_queued(self, job_id: uuid.UUID) -> None:
        """The task's body: run the queued run `job_id` here, if it is still queued."""
        self.start()
        if threading.current_thread() is threading.main_thread():
            self.chain_stop_signals()
        try:
            job = Job.objects.filter(pk=job_id).first()
            if job is None:
                logger.warning("Job %s does not exist (deleted?): nothing to run", job_id)
                return
            self.run(job)
        except Exception as exc:
            logger.exception("Runlog failed to run job %s", job_id)
            reason = f"The run's end could not be recorded: {one_line(exc)}"
            self.supervisor.end_later(job_id, JobStatus.FAILED, reason)
        finally:
            close_thread_connection()

    def shut_down(self, grace: float | None = None) -> None:
        """End this server process's runs before it exits; idempotent, and a second caller
        waits for the first. Each running job is asked to stop (it ends failed, after its
        lines are stored, with a system line saying the server shut down) and gets `grace`
        seconds (RUNLOG_SHUTDOWN_GRACE) to do so. A job still going after that (stuck in a
        C call, say) is ended here the same way, its output so far stored. Runs still queued
        end failed, never started. Then this process's viewers are told to reconnect."""
        with self._shutdown_lock:
            if self._shut_down:
                return
            self._shut_down = self._refusing = True
            grace = runlog_settings.SHUTDOWN_GRACE if grace is None else grace
            for context in self.supervisor.running():
                context.cancel(CancelReason.SHUTDOWN)
            self.supervisor.wait_idle(grace)
            message = f"Interrupted: the server shut down, and the job did not stop within {grace:g} s."
            self._end_stuck_runs(message)
            queued = Job.objects.owned_by(self.identity).filter(status=JobStatus.QUEUED)
            for job_id in queued.values_list("pk", flat=True):
                end_run(job_id, JobStatus.FAILED, "Not started: the server shut down before the run began.")
            hub.close_streams()
            close_thread_connection()

    def shut_down_worker(self, grace: float | None = None) -> None:
        """End this worker's runs before it exits (a deploy); idempotent. The runs get
        `grace` seconds (RUNLOG_SHUTDOWN_GRACE) to finish on their own; those still going
        are then stopped (failed, with a system line saying why), and a job that does not
        stop within STOP_WAIT is ended where it stands, its output so far stored."""
        with self._shutdown_lock:
            if self._shut_down:
                return
            self._shut_down = True
            grace = runlog_settings.SHUTDOWN_GRACE if grace is None else grace
            running = self.supervisor.running()
            if running:
                logger.warning("Worker stopping: its %d run(s) get %g s to finish", len(running), grace)
            if not self.supervisor.wait_idle(grace):
                for context in self.supervisor.running():
                    context.cancel(CancelReason.WORKER_SHUTDOWN)
                self.supervisor.wait_idle(STOP_WAIT)
                self._end_stuck_runs(worker_shutdown_message() + " It did not stop when asked.")
            close_thread_connection()

    def start_shutting_down(self) -> None:
        """shut_down_worker() in a thread of its own (a signal handler must return at once)."""
        capture.start_detached(threading.Thread(target=self.shut_down_worker, name="runlog-shutdown", daemon=True))

    def stop_runs_now(self) -> None:
        """A second stop signal: stop the runs at once instead of waiting out the grace."""
        for context in self.supervisor.running():
            context.cancel(CancelReason.WORKER_SHUTDOWN)

    def _end_stuck_runs(self, message: str) -> None:
        for context in self.supervisor.running():
            _end_stuck_run(context.job_id, context.writer, message)
            self.supervisor.untrack(context.job_id)

    def shut_down_on(self, signum: int) -> None:
        """Start shut_down_worker() on `signum`, and leave the process's stop signals alone
        (a Celery prefork pool process, whose worker tells it so)."""
        self._signals_chained = True
        signal.signal(signum, lambda received, frame: self.start_shutting_down())

    def chain_stop_signals(self) -> None:
        """For a worker whose jobs run in its main thread (db_worker, Celery's solo pool),
        whose own SIGTERM/SIGINT handlers only stop it taking tasks. Runlog's
        come first: the first signal starts the grace period, a second one stops the runs at
        once (rather than letting the worker exit in the middle of a job). An ignored signal
        stays ignored. Call from the main thread."""
        if self._signals_chained:
            return
        self._signals_chained = True
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous = signal.getsignal(signum)
            if previous == signal.SIG_IGN:
                continue

            def handler(received: int, frame: FrameType | None, previous: Any = previous) -> None:
                if self._shut_down:
                    self.stop_runs_now()
                    return
                with capture.detached():
                    self.start_shutting_down()
                    if callable(previous):
                        previous(received, frame)

            signal.signal(signum, handler)


def _end_stuck_run(job_id: uuid.UUID, writer: LogWriter, message: str) -> None:
    logger.warning("Job %s: %s", job_id, message)
    writer.write_system(message)
    writer.close()  # stores every line written so far; later writes go to the process's stderr
    job = Job.objects.get(pk=job_id)
    job.finish(JobStatus.FAILED, message)
    announce(job.id, job.line_count)


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
