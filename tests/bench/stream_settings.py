"""Settings of the streaming benchmark (its gunicorn servers and its own process): the
project's production settings (config.settings, DEBUG off) plus this package as an app, so
that its job module (tests/bench/jobs.py: the bench.* jobs) is discovered like any app's.

Only these differ from production: static files are served without a manifest (no
collectstatic for a benchmark database), passwords hash fast, the URLs add the idle
section's baseline view (tests/bench/urls.py), and RUNLOG_NOTIFY and
RUNLOG_HEARTBEAT_INTERVAL come from the environment, so that a server can be measured
polling only, or with a quiet supervisor.
"""

import os

os.environ.setdefault("SECRET_KEY", "benchmark-only-not-a-secret")

from config.settings import *  # noqa: E402,F403

INSTALLED_APPS = [*INSTALLED_APPS, "tests.bench"]  # noqa: F405
STORAGES["staticfiles"] = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}  # noqa: F405
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
ROOT_URLCONF = "tests.bench.urls"
RUNLOG_NOTIFY = os.environ.get("RUNLOG_NOTIFY", "1") == "1"
if "RUNLOG_HEARTBEAT_INTERVAL" in os.environ:
    RUNLOG_HEARTBEAT_INTERVAL = float(os.environ["RUNLOG_HEARTBEAT_INTERVAL"])
