from __future__ import annotations

from django.apps import AppConfig
from django.core.exceptions import ImproperlyConfigured


class JobsConfig(AppConfig):
    name = "jobs"
    verbose_name = "Jobs"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from jobs import registry, tasks  # noqa: F401 - a Celery worker registers the task on import
        from jobs.conf import runlog_settings
        from jobs.retention import parse_age

        if runlog_settings.RETENTION is not None:
            try:
                parse_age(runlog_settings.RETENTION)
            except ValueError as exc:
                raise ImproperlyConfigured(f"RUNLOG_RETENTION: {exc}") from None

        # Capture is installed by the processes that execute runs (jobs.running.runner),
        # never here: a web process that runs no job keeps its own stdout untouched.
        if runlog_settings.DEMO_JOBS:
            import jobs.demo  # noqa: F401 - registers the demo.* jobs
        registry.autodiscover()
