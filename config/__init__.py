"""The project's configuration. The environment is complete once this package is loaded:
variables already set win over those of the optional `.env` file (ENV_FILE names another).

The Celery app is loaded with Django, as Celery's Django guide does, so that runs enqueued
from web processes use it, but only where runs go to Celery (TASK_BACKEND=celery):
importing Celery would cost every other process (a server's workers, `runjob`,
`db_worker`) a good part of its start-up. `celery -A config worker` finds it in
config/celery.py.
"""

import os
from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent

environ.Env.read_env(os.environ.get("ENV_FILE", str(BASE_DIR / ".env")), overwrite=False)

if os.environ.get("TASK_BACKEND") == "celery":
    from config.celery import app as celery_app  # noqa: F401
