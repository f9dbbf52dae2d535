"""The states of a run and the streams of a line (importable before the app registry)."""

from __future__ import annotations

from django.db import models


class JobStatus(models.TextChoices):
    QUEUED = "queued"
    """Created; waiting for a worker thread."""
    RUNNING = "running"
    """A worker is running it (see `worker` and `heartbeat_at`)."""
    SUCCEEDED = "succeeded"
    """The job function returned."""
    FAILED = "failed"
    """The job function raised, or it ran out of time."""
    CANCELLED = "cancelled"
    """Stopped on request."""
    LOST = "lost"
    """The process running it died; lines stored before that are kept."""

    @classmethod
    def finished_values(cls) -> list[str]:
        return [cls.SUCCEEDED, cls.FAILED, cls.CANCELLED, cls.LOST]


class LogStream(models.TextChoices):
    STDOUT = "stdout"
    """print() and sys.stdout; a subprocess's standard output."""
    STDERR = "stderr"
    """sys.stderr, tracebacks; a subprocess's standard error."""
    LOG = "log"
    """A record from the logging module, with its level and logger name."""
    SYSTEM = "system"
    """A note from Runlog itself: cancel, timeout, lost run, truncation."""
