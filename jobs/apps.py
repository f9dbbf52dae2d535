from __future__ import annotations

from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "jobs"
    verbose_name = "Jobs"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from jobs import registry, tasks  # noqa: F401 - a Celery worker registers the task on import
        from jobs.conf import runlog_settings

        # Capture is installed by the processes that execute runs (jobs.running.runner),
        # never here: a web process that runs no job keeps its own stdout untouched.
        if runlog_settings.DEMO_JOBS:
            import jobs.demo  # noqa: F401 - registers the demo.* jobs
        registry.autodiscover()
