"""WSGI entry point (gunicorn). Starts this process's job runner beside the app."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

application = get_wsgi_application()

from jobs.running.runner import start as start_runner  # noqa: E402 - needs the app registry

start_runner()
