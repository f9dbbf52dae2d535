"""ASGI entry point (gunicorn's uvicorn workers, uvicorn). Starts this process's supervisor
beside the app."""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django.setup(set_prefix=False)

from jobs.asgi import RunlogASGIHandler  # noqa: E402 - needs the app registry

application = RunlogASGIHandler()

from jobs.running.runner import get_runner  # noqa: E402

# Every Runlog process watches for runs whose worker died; this one executes runs only if
# the threads backend hands it some (its runner starts capture then).
get_runner().supervise()
