"""ASGI entry point. Starts this process's supervisor beside the app."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

application = get_asgi_application()

from jobs.running.runner import get_runner  # noqa: E402 - needs the app registry

# Every Runlog process watches for runs whose worker died; this one executes runs only if
# the threads backend hands it some (its runner starts capture then).
get_runner().supervise()
