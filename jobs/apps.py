from __future__ import annotations

from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "jobs"
    verbose_name = "Jobs"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from jobs import registry
        from jobs.conf import runlog_settings
        from jobs.running import capture

        # Capture is installed once here; it costs threads that run no job nothing.
        capture.install()
        if runlog_settings.DEMO_JOBS:
            import jobs.demo  # noqa: F401 - registers the demo.* jobs
        registry.autodiscover()
