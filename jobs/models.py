"""Runs of registered jobs (Job) and the lines they wrote (LogLine)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connections, models
from django.db.models import Q
from django.db.models.functions import Cast
from django.urls import reverse
from django.utils import timezone

from jobs.choices import JobStatus, LogStream

__all__ = ["Job", "JobQuerySet", "JobStatus", "LogLine", "LogLineQuerySet", "LogStream", "Row", "column_of"]


class JobQuerySet(models.QuerySet["Job"]):
    def unfinished(self) -> JobQuerySet:
        return self.filter(status__in=[JobStatus.QUEUED, JobStatus.RUNNING])

    def owned_by(self, worker: str) -> JobQuerySet:
        return self.unfinished().filter(worker=worker)

    def stale(self, now: datetime, lost_after: float) -> JobQuerySet:
        """Unfinished runs whose owner stopped sending heartbeats."""
        return self.unfinished().filter(heartbeat_at__lt=now - timedelta(seconds=lost_after))


class Job(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200, db_index=True)
    params = models.JSONField(default=dict, blank=True)
    status = models.CharField(
        max_length=max(len(value) for value in JobStatus.values),
        choices=JobStatus.choices,
        default=JobStatus.QUEUED,
    )
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    launched_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    line_count = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True, help_text="One-line summary of why the run failed.")

    # Run control: who runs it, whether it is alive, whether someone asked it to stop.
    worker = models.CharField(max_length=200, blank=True, help_text="host:pid:token of the owning process.")
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    cancel_requested = models.BooleanField(default=False)
    cancelled_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Who asked the run to stop.",
    )
    timeout = models.FloatField(null=True, blank=True, help_text="Seconds the run may take.")

    # Progress reported with jobs.progress().
    progress_done = models.FloatField(null=True, blank=True)
    progress_total = models.FloatField(null=True, blank=True)
    progress_message = models.CharField(max_length=500, blank=True)

    objects = JobQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["-created_at"], name="job_created_idx"),
            models.Index(fields=["status", "-created_at"], name="job_status_created_idx"),
            # The supervisor's sweeps only ever look at unfinished runs.
            models.Index(
                fields=["worker", "heartbeat_at"],
                name="job_unfinished_idx",
                condition=Q(status__in=["queued", "running"]),
            ),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(status__in=JobStatus.values), name="job_status_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.name} {self.id}"

    def get_absolute_url(self) -> str:
        return reverse("jobs:detail", args=[self.id])

    @property
    def is_finished(self) -> bool:
        return self.status in JobStatus.finished_values()

    @property
    def duration(self) -> timedelta | None:
        if self.started_at is None:
            return None
        return (self.finished_at or timezone.now()) - self.started_at

    # State changes. Each writes only the fields it owns: line_count belongs to the log
    # writer, which updates it in the same transaction as the lines it stores.

    def claim(self, worker: str) -> bool:
        """queued -> running, for this worker. False when the run is no longer queued."""
        now = timezone.now()
        claimed = Job.objects.filter(pk=self.pk, status=JobStatus.QUEUED).update(
            status=JobStatus.RUNNING, started_at=now, worker=worker, heartbeat_at=now
        )
        if claimed:
            self.status, self.started_at, self.worker, self.heartbeat_at = JobStatus.RUNNING, now, worker, now
        return bool(claimed)

    def end_with_line(self, status: JobStatus, error: str, line: str) -> bool:
        """End a run that no job thread will end (lost, never started, cancelled while
        queued): one system line saying why, then the status. The caller holds the row's
        lock (select_for_update) in a transaction, so no other line can take its number."""
        number = self.line_count + 1
        LogLine.objects.create(job=self, number=number, stream=LogStream.SYSTEM, text=line)
        Job.objects.filter(pk=self.pk).update(line_count=number)
        self.line_count = number
        return self.finish(status, error)

    def finish(self, status: JobStatus, error: str = "") -> bool:
        """Record how the run ended, unless it already ended (e.g. another process marked
        it lost meanwhile). True if this call recorded it."""
        now = timezone.now()
        updated = Job.objects.filter(pk=self.pk).unfinished().update(status=status, error=error, finished_at=now)
        if updated:
            self.status, self.error, self.finished_at = status, error, now
        else:
            self.refresh_from_db(fields=["status", "error", "finished_at"])
        return bool(updated)


#: (number, stream, created_at, text): one stored line, as viewers see it. created_at is a
#: datetime for live lines, the database's text for lines read back (jobs.streaming.formats reads both).
Row = tuple[int, str, datetime | str, str]


class LogLineQuerySet(models.QuerySet["LogLine"]):
    def rows_after(self, job_id: uuid.UUID, after: int, limit: int) -> list[Row]:
        """(number, stream, created_at as the database's text, text) of the run's stored
        lines after+1 .. after+limit, for streaming them.

        Lines are numbered without gaps, so the range is the page: it bounds the scan on
        (job, number) even when PostgreSQL has no statistics yet (a plain `number > after`
        then makes it scan and sort every later line, for each page). The time is read as
        text because converting a datetime per row is most of a replay's cost, and lines
        stored together share one time (see jobs.streaming.formats)."""
        rows = self.filter(job_id=job_id, number__gt=after, number__lte=after + limit).order_by("number")
        stored_at = Cast("created_at", models.TextField())
        # The ORM writes the query; the rows are fetched in one call, without the ORM's
        # per-row iteration, which halves a replay's speed.
        sql, params = rows.values_list("number", "stream", stored_at, "text").query.sql_with_params()
        with connections[self.db].cursor() as cursor:
            cursor.execute(sql, params)
            fetched: list[Row] = cursor.fetchall()
            return fetched


def column_of(model: type[models.Model], field_name: str) -> str:
    """The database column of one of `model`'s own fields, for SQL written by hand."""
    field = model._meta.get_field(field_name)
    if not isinstance(field, models.Field) or field.column is None:
        raise TypeError(f"{model.__name__}.{field_name} has no column of its own")
    return field.column


class LogLine(models.Model):
    # Indexed through the (job, number) constraint below; a separate index on job alone
    # would only slow down inserts.
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="lines", db_index=False)
    number = models.PositiveIntegerField()
    stream = models.CharField(
        max_length=max(len(value) for value in LogStream.values),
        choices=LogStream.choices,
        default=LogStream.STDOUT,
    )
    text = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    objects = LogLineQuerySet.as_manager()

    class Meta:
        ordering = ["job", "number"]
        constraints = [
            models.UniqueConstraint(fields=["job", "number"], name="logline_job_number_unique"),
            models.CheckConstraint(condition=Q(number__gte=1), name="logline_number_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.job_id}#L{self.number}"
