"""ASGI entry point. Starts this process's job runner beside the app."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

application = get_asgi_application()

from jobs.running.runner import start as start_runner  # noqa: E402 - needs the app registry

start_runner()
