"""Test settings: the project's settings with a fixed secret and fast password hashing.

DATABASE_URL picks the database exactly as in production (SQLite when unset), so the same
suite runs on SQLite and on PostgreSQL.
"""

import os

os.environ.setdefault("SECRET_KEY", "tests-only-not-a-secret")

from config.settings import *  # noqa: E402,F403

# This package as an app: worker processes discover its jobs (tests/jobs.py) like any app's.
INSTALLED_APPS = [*INSTALLED_APPS, "tests"]  # noqa: F405
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES["staticfiles"] = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}  # noqa: F405
# Quicker heartbeats and lost-run detection, so the tests of those take seconds (a server
# whose database use is counted gets a quiet supervisor from its environment).
RUNLOG_HEARTBEAT_INTERVAL = float(os.environ.get("RUNLOG_HEARTBEAT_INTERVAL", "0.5"))
# Ten heartbeats: a busy machine running the suite in parallel may delay a few.
RUNLOG_LOST_AFTER = float(os.environ.get("RUNLOG_LOST_AFTER", "5.0"))
RUNLOG_CANCEL_POLL_INTERVAL = 0.2
RUNLOG_KILL_GRACE = 1.0
# Servers started by the streaming tests take these from the environment they are given.
RUNLOG_STREAM_HEARTBEAT = float(os.environ.get("RUNLOG_STREAM_HEARTBEAT", "10"))
RUNLOG_VIEWER_DATABASE_SLOTS = int(os.environ.get("RUNLOG_VIEWER_DATABASE_SLOTS", "8"))
RUNLOG_POLL_INTERVAL = float(os.environ.get("RUNLOG_POLL_INTERVAL", "0.2"))
RUNLOG_NOTIFY = os.environ.get("RUNLOG_NOTIFY", "1") == "1"
# Servers started by the tests serve static files straight from the apps (no collectstatic).
STATIC_ROOT = None
WHITENOISE_USE_FINDERS = True
# The worker tests' Celery broker: a Redis database of its own. Each xdist worker (and the
# Celery workers it starts, which inherit its environment) keeps its keys under its own
# prefix, so that parallel tests never take or empty each other's queue.
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/15")
CELERY_BROKER_KEY_PREFIX = f"runlog-tests-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}:"
CELERY_BROKER_TRANSPORT_OPTIONS = {"global_keyprefix": CELERY_BROKER_KEY_PREFIX}
# The production backends, emptied faster between transactional tests (tests/backends/).
DATABASES["default"]["ENGINE"] = DATABASES["default"]["ENGINE"].replace("django.db.backends.", "tests.backends.")  # noqa: F405
