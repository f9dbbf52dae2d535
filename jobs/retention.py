"""Deleting old runs and their lines: `manage.py prunejobs`, and RUNLOG_RETENTION, which the
supervisor of every worker applies once an hour.

Only finished runs are deleted. A run's lines go first, a range of line numbers per
transaction, so that no transaction holds many row locks or runs for long: running jobs
keep storing their lines meanwhile. The run's row goes last, once it has no line left.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from jobs.choices import JobStatus
from jobs.models import Job, JobQuerySet, LogLine

#: Lines deleted per transaction.
BATCH = 10_000

_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_AGE = re.compile(r"^\s*(\d{1,9})\s*([smhdw])\s*$")


def parse_age(text: str) -> timedelta:
    """'90d', '12h', '30m', '2w', '45s' as a timedelta; ValueError with a message otherwise."""
    match = _AGE.match(text)
    if match is None:
        raise ValueError(f"An age is a number and a unit (s, m, h, d or w), such as 90d; not {text!r}.")
    return timedelta(**{_UNITS[match[2]]: int(match[1])})


def parse_statuses(text: str) -> list[str]:
    """A comma-separated list of finished statuses; ValueError with a message otherwise."""
    statuses = [status.strip() for status in text.split(",") if status.strip()]
    finished = JobStatus.finished_values()
    unknown = [status for status in statuses if status not in finished]
    if unknown or not statuses:
        raise ValueError(f"Statuses are among {', '.join(finished)}; not {text!r}.")
    return statuses


@dataclass
class Pruned:
    runs: int = 0
    lines: int = 0


def expired(older_than: timedelta, statuses: Iterable[str] = (), names: Iterable[str] = ()) -> JobQuerySet:
    """Finished runs that ended more than `older_than` ago, with those statuses and names
    (any, when none is given)."""
    runs = Job.objects.filter(status__in=JobStatus.finished_values(), finished_at__lt=timezone.now() - older_than)
    if statuses := list(statuses):
        runs = runs.filter(status__in=statuses)
    if names := list(names):
        runs = runs.filter(name__in=names)
    return runs


def prune(runs: JobQuerySet, *, dry_run: bool = False, batch: int = BATCH) -> Pruned:
    """Delete `runs` (finished ones only) and their lines; with `dry_run`, count them."""
    pruned = Pruned()
    for job_id, line_count in runs.filter(status__in=JobStatus.finished_values()).values_list("pk", "line_count"):
        pruned.runs += 1
        if dry_run:
            pruned.lines += line_count
        else:
            pruned.lines += _delete_run(job_id, line_count, batch)
    return pruned


def _delete_run(job_id: uuid.UUID, line_count: int, batch: int) -> int:
    deleted = 0
    # From the end, so that a run being pruned never shows a gap in its first lines.
    for high in range(line_count, 0, -batch):
        with transaction.atomic():
            count, _ = LogLine.objects.filter(job_id=job_id, number__gt=high - batch, number__lte=high).delete()
        deleted += count
    with transaction.atomic():
        deleted += LogLine.objects.filter(job_id=job_id).delete()[0]  # any past line_count (none expected)
        Job.objects.filter(pk=job_id, status__in=JobStatus.finished_values()).delete()
    return deleted
