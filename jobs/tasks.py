"""The one task Runlog enqueues: run a queued Job.

It goes through Django's Tasks framework, so the backend chosen by TASK_BACKEND executes
it: a thread of the launching process, a `db_worker`, or a Celery worker. Whatever executes
it claims the run first (jobs.running.runner), so a task delivered twice runs the job once.
"""

from __future__ import annotations

import uuid

from jobs.tasks_compat import task


@task()
def run_job(job_id: str) -> None:
    """Execute the queued run `job_id` in this process, with Runlog's capture."""
    from jobs.running.runner import get_runner  # the worker side is loaded where tasks run

    get_runner().run_queued(uuid.UUID(job_id))


def runs_in_this_process() -> bool:
    """Whether the configured backend executes runs in the process that enqueues them."""
    from jobs.running.threads_backend import ThreadsBackend

    return isinstance(run_job.get_backend(), ThreadsBackend)
