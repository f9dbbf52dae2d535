"""Running one job in the calling thread, with capture, and recording how it ended."""

from __future__ import annotations

import logging
import traceback
from typing import TYPE_CHECKING

from django.db import connection

from jobs import capture, registry
from jobs.conf import runlog_settings
from jobs.control import CancelReason, JobCancelled, JobContext
from jobs.dbretry import retrying
from jobs.flusher import flusher
from jobs.models import Job, JobStatus

if TYPE_CHECKING:
    from jobs.supervisor import Supervisor

logger = logging.getLogger(__name__)

#: The longest Job.error kept; the full traceback is in the log.
ERROR_SUMMARY_LENGTH = 1000


def execute(job: Job, supervisor: Supervisor) -> Job:
    """Run a claimed (running) job to its end. Every line is stored before the final status."""
    writer = flusher.new_writer(job.id)
    context = JobContext(job.id, job.name, writer, timeout=job.timeout)
    writer.context = context
    supervisor.track(context)
    status, error = JobStatus.SUCCEEDED, ""
    capture.bind(context)
    try:
        spec = registry.get(job.name)
        spec.func(**spec.clean(job.params))
    except JobCancelled:
        status, error = _stopped(context)
    except SystemExit as exc:
        if exc.code not in (None, 0):
            status, error = JobStatus.FAILED, f"The job exited with status {exc.code}."
            writer.write_system(error)
    except BaseException as exc:  # noqa: BLE001 - the job's failure is recorded, not raised
        if context.cancelled:
            # e.g. a subprocess killed by the cancel made run_command(check=True) raise
            status, error = _stopped(context)
        else:
            status, error = JobStatus.FAILED, _summary(exc)
            writer.write_forced(writer.stderr, "".join(_job_traceback(exc)))
    finally:
        capture.bind(None)
        writer.close()
        supervisor.untrack(context)
    if writer.failure is not None:
        status, error = JobStatus.FAILED, f"Log storage failed: {writer.failure}"
    retrying(lambda: job.finish(status, error), runlog_settings.DATABASE_RETRY_LIMIT, "save a job's status")
    job.refresh_from_db()
    return job


def _stopped(context: JobContext) -> tuple[JobStatus, str]:
    """The status and the system line of a job stopped from outside."""
    reason = context.cancel_reason
    if reason == CancelReason.TIMEOUT:
        status, message = JobStatus.FAILED, f"Timed out after {context.timeout:g} s."
    elif reason == CancelReason.SHUTDOWN:
        status, message = JobStatus.FAILED, "Interrupted: the server running it shut down."
    elif reason == CancelReason.STORAGE:
        return JobStatus.FAILED, ""  # the flusher writes the line; execute() sets the error
    else:
        status, message = JobStatus.CANCELLED, "Cancelled on request."
    context.writer.write_system(message)
    return status, message if status == JobStatus.FAILED else ""


def _summary(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    first_line = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return first_line[:ERROR_SUMMARY_LENGTH]


def _job_traceback(exc: BaseException) -> list[str]:
    """The traceback from the job function down, without Runlog's own frame."""
    tb = exc.__traceback__
    if tb is not None and tb.tb_frame.f_code is execute.__code__:
        tb = tb.tb_next
    return traceback.format_exception(type(exc), exc, tb)


def close_thread_connection() -> None:
    """A job thread gives its database connection back when the job ends."""
    try:
        connection.close()
    except Exception:
        logger.exception("Closing a job thread's database connection failed")
