"""Running one job in the calling thread, with capture, and recording how it ended."""

from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.db import DatabaseError, connection

from jobs import registry
from jobs.conf import runlog_settings
from jobs.logstore.dbretry import retrying
from jobs.logstore.flusher import failure_note, flusher
from jobs.logstore.hub import hub
from jobs.logstore.notify import announce
from jobs.logstore.writer import Channel
from jobs.models import Job, JobStatus
from jobs.running import capture
from jobs.running.control import CancelReason, JobCancelled, JobContext

if TYPE_CHECKING:
    from jobs.running.supervisor import Supervisor

logger = logging.getLogger(__name__)

#: The longest Job.error kept; the full traceback is in the log.
ERROR_SUMMARY_LENGTH = 1000


def execute(job: Job, supervisor: Supervisor) -> Job:
    """Run a claimed (running) job to its end. Every line is stored before the final status.
    Its viewers in this process hear of its start and its end through the hub."""
    hub.run_started_here(job.id)
    try:
        return _execute(job, supervisor)
    finally:
        hub.run_ended_here(job.id)
        # Only now: a shutdown waiting for this process to be idle ends its streams next,
        # after its viewers have heard that the run ended.
        supervisor.untrack(job.id)


def _execute(job: Job, supervisor: Supervisor) -> Job:
    writer = flusher.new_writer(job.id)
    context = JobContext(job.id, job.name, writer, timeout=job.timeout, orphan_stream=capture.original_stream)
    writer.control = context
    supervisor.track(context)
    capture.bind(context)
    try:
        outcome = _call_job_function(job, context)
    finally:
        capture.bind(None)
    # The job's unfinished lines come before what Runlog reports about its end.
    writer.end_channel(writer.stdout)
    writer.end_channel(writer.stderr)
    if outcome.report:
        writer.write_forced(outcome.report_channel or writer.system, outcome.report)
    writer.close()
    status, error = outcome.status, outcome.error
    if writer.failure is not None:
        status, error = JobStatus.FAILED, f"Log storage failed: {writer.failure}"
    try:
        retrying(lambda: job.finish(status, error), runlog_settings.DATABASE_RETRY_LIMIT, "save a job's status")
    except DatabaseError:
        # The database is still away: the supervisor records the end once it is back.
        note = failure_note(writer) if writer.failure is not None else None
        supervisor.end_later(job.id, status, error, note)
        raise
    job.refresh_from_db()
    announce(job.id, job.line_count)
    return job


@dataclass
class _Outcome:
    status: JobStatus
    error: str = ""
    report: str = ""  # what to add to the log about the end: a traceback or a system note
    report_channel: Channel | None = None  # None: the system stream


def _call_job_function(job: Job, context: JobContext) -> _Outcome:
    try:
        spec = registry.get(job.name)
        spec.func(**spec.clean(job.params))
    except JobCancelled:
        return _stopped(context)
    except SystemExit as exc:
        if exc.code in (None, 0):
            return _finished_normally(context)
        message = f"The job exited with status {exc.code}."
        return _Outcome(JobStatus.FAILED, message, message + "\n")
    except BaseException as exc:  # noqa: BLE001 - the job's failure is recorded, not raised
        if context.cancelled:
            # e.g. a subprocess killed by the cancel made run_command(check=True) raise
            return _stopped(context)
        traceback_text = "".join(_job_traceback(exc))
        return _Outcome(JobStatus.FAILED, _summary(exc), traceback_text, context.writer.stderr)
    return _finished_normally(context)


def _finished_normally(context: JobContext) -> _Outcome:
    # A job can be stopped while it is somewhere no cancel reaches (a C call, a lock)
    # and then return: it still ran out of time, or was cancelled.
    return _stopped(context) if context.cancelled else _Outcome(JobStatus.SUCCEEDED)


def _stopped(context: JobContext) -> _Outcome:
    """How a job stopped from outside ended, and the system line that says so."""
    reason = context.cancel_reason
    if reason == CancelReason.TIMEOUT:
        message = f"Timed out after {context.timeout:g} s."
        return _Outcome(JobStatus.FAILED, message, message + "\n")
    if reason == CancelReason.SHUTDOWN:
        message = "Interrupted: the server running it shut down."
        return _Outcome(JobStatus.FAILED, message, message + "\n")
    if reason == CancelReason.WORKER_SHUTDOWN:
        message = worker_shutdown_message()
        return _Outcome(JobStatus.FAILED, message, message + "\n")
    if reason == CancelReason.STORAGE:
        return _Outcome(JobStatus.FAILED)  # the flusher writes the line; execute() sets the error
    note = f"Cancelled by {context.cancelled_by}." if context.cancelled_by else "Cancelled on request."
    return _Outcome(JobStatus.CANCELLED, "", note + "\n")


def worker_shutdown_message() -> str:
    return (
        "Interrupted: the worker running it shut down, and the job did not finish within "
        f"{runlog_settings.SHUTDOWN_GRACE:g} s (RUNLOG_SHUTDOWN_GRACE)."
    )


def _summary(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    first_line = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return first_line[:ERROR_SUMMARY_LENGTH]


def _job_traceback(exc: BaseException) -> list[str]:
    """The traceback from the job function down, without Runlog's own frame."""
    tb = exc.__traceback__
    if tb is not None and tb.tb_frame.f_code is _call_job_function.__code__:
        tb = tb.tb_next
    return traceback.format_exception(type(exc), exc, tb)


def close_thread_connection() -> None:
    """A job thread gives its database connection back when the job ends."""
    try:
        connection.close()
    except Exception:
        logger.exception("Closing a job thread's database connection failed")
