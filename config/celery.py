"""The Celery app of `TASK_BACKEND=celery`: `celery -A config worker`.

Its settings are Django's CELERY_* settings; Runlog's one task (jobs.tasks.run_job) is
registered when Django loads the jobs app. Runlog's per-process set-up of a worker (capture,
supervisor, stopping runs on a deploy) hangs off Celery's worker signals.
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("runlog")
app.config_from_object("django.conf:settings", namespace="CELERY")

import jobs.running.celery_worker  # noqa: E402,F401 - connects the worker signals
