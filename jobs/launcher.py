"""Launching and cancelling runs: what the admin, the pages, `runjob` and `jobs.launch()`
do to a run. Both are operations on the run in the database; whichever process executes
it (or none yet) follows from there."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.db import transaction
from django.utils import timezone

from jobs import registry
from jobs.logstore.notify import announce
from jobs.models import Job, JobStatus
from jobs.tasks import run_job, runs_in_this_process

if TYPE_CHECKING:
    from django.contrib.auth.models import User  # AUTH_USER_MODEL, as the type checker sees it

#: Who launches or cancels: a request's user (maybe anonymous), or nobody (a script).
Requester = AbstractBaseUser | AnonymousUser


def create_run(name: str, params: dict[str, Any], user: Requester | None = None, *, owner: str = "") -> Job:
    """A queued run of job `name`. Raises UnknownJob or InvalidParameters (with a message
    per bad field) and then creates nothing. With `owner` (a process identity) the run is
    that process's from the start: its heartbeats keep it alive, and it is lost with it."""
    spec = registry.get(name)
    stored = spec.to_json(params)
    return Job.objects.create(
        name=spec.name,
        params=stored,
        status=JobStatus.QUEUED,
        launched_by=_known(user),
        timeout=spec.timeout,
        worker=owner,
        heartbeat_at=timezone.now() if owner else None,
    )


def launch(name: str, *, user: Requester | None = None, **params: Any) -> Job:
    """Create a queued run of job `name` and, once the current transaction commits (at once
    outside one), enqueue the task that runs it. Returns the queued Job.

    With the threads backend the run is this process's from the start, so that it ends lost
    if the process dies before running it; with a worker backend it waits for any worker."""
    owner = ""
    if runs_in_this_process():
        from jobs.running.runner import start

        owner = start().identity
    job = create_run(name, params, user, owner=owner)
    transaction.on_commit(lambda: run_job.enqueue(str(job.id)))
    return job


def relaunch(job: Job, *, user: Requester | None = None) -> Job:
    """A new run of the same job with the same parameters (re-run from the page or the admin).
    Raises UnknownJob if the job is no longer registered, InvalidParameters if its stored
    parameters no longer fit the job's form."""
    spec = registry.get(job.name)
    return launch(spec.name, user=user, **spec.clean(job.params))


def cancel_run(job_id: uuid.UUID, user: Requester | None = None) -> bool:
    """Ask a run to stop, and record who asked. A queued run ends cancelled at once, with no
    worker involved. A running one is flagged: the process running it, on whichever machine,
    sees the flag within RUNLOG_CANCEL_POLL_INTERVAL (at once when that is this process) and
    stops the job at its next output, sleep() or checkpoint(). False if it had finished."""
    by = _known(user)
    with transaction.atomic():
        job = Job.objects.select_for_update().filter(pk=job_id).unfinished().first()
        if job is None:
            return False
        Job.objects.filter(pk=job_id).update(cancel_requested=True, cancelled_by=by)
        queued = job.status == JobStatus.QUEUED
        if queued:
            who = f"by {by.get_username()}" if by is not None else "on request"
            job.end_with_line(JobStatus.CANCELLED, "", f"Cancelled {who} before it started.")
        announce(job_id, job.line_count)  # delivered when the transaction commits
    if not queued:
        _stop_here(job_id, by)
    return True


def _stop_here(job_id: uuid.UUID, by: User | None) -> None:
    """If this process runs the job, stop it now rather than at the supervisor's next poll."""
    from jobs.running.runner import get_runner

    get_runner().supervisor.cancel(job_id, by=by.get_username() if by is not None else None)


def _known(user: Requester | None) -> User | None:
    """The signed-in user to record (of the model AUTH_USER_MODEL names), or None."""
    return user if isinstance(user, get_user_model()) and user.is_authenticated else None
