"""Launching a run: validate its parameters, create the Job, hand it to the runner."""

from __future__ import annotations

from functools import partial
from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from jobs import registry
from jobs.models import Job, JobStatus
from jobs.running.runner import start


def create_run(name: str, params: dict[str, Any], user: AbstractBaseUser | None = None) -> Job:
    """A queued run of job `name`, owned by this process. Raises UnknownJob or
    InvalidParameters (with a message per bad field) and then creates nothing."""
    spec = registry.get(name)
    stored = spec.to_json(params)
    runner = start()
    return Job.objects.create(
        name=spec.name,
        params=stored,
        status=JobStatus.QUEUED,
        launched_by=user if user is not None and user.is_authenticated else None,
        timeout=spec.timeout,
        worker=runner.identity,
        heartbeat_at=timezone.now(),
    )


def launch(name: str, *, user: AbstractBaseUser | None = None, **params: Any) -> Job:
    """Launch a run of job `name` in this process's runner, once the current transaction
    commits (at once outside a transaction). Returns the queued Job."""
    job = create_run(name, params, user)
    transaction.on_commit(partial(start().submit, job.id))
    return job


def relaunch(job: Job, *, user: AbstractBaseUser | None = None) -> Job:
    """A new run of the same job with the same parameters (re-run from the page or the admin).
    Raises UnknownJob if the job is no longer registered, InvalidParameters if its stored
    parameters no longer fit the job's form."""
    spec = registry.get(job.name)
    return launch(spec.name, user=user, **spec.clean(job.params))
