"""Runlog settings, read from the environment (and an optional `.env` file) with django-environ.

Every setting a deployment may change is an environment variable; see `.env.example`.
"""

from __future__ import annotations

from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from config import BASE_DIR

env = environ.Env()  # the `.env` file is read into it when the config package loads

# --- Core -------------------------------------------------------------------------------

DEBUG = env.bool("DEBUG", default=False)
# A secret key is only optional in development: outside DEBUG a missing one is an error.
SECRET_KEY = env("SECRET_KEY") if not DEBUG else env("SECRET_KEY", default="dev-only-insecure-key")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    # Before django_tasks_db: its `db_worker` command is Runlog's (jobs/management/commands).
    "jobs",
    "django_tasks",
    "django_tasks_db",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -----------------------------------------------------------------------------
# SQLite (a file in the project root) unless DATABASE_URL says otherwise.

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Job threads, the log flusher and web requests write concurrently. WAL lets readers
    # run beside the writer; IMMEDIATE transactions take the write lock up front (so a
    # reader never has to upgrade and fail with "database is locked"); the busy timeout
    # makes writers queue for the lock instead of erroring. synchronous=NORMAL is durable
    # across a crash of the app (not of the OS) and saves an fsync per commit. A larger
    # page cache and fewer WAL checkpoints speed up the log's inserts.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "transaction_mode": "IMMEDIATE",
            "timeout": env.int("SQLITE_BUSY_TIMEOUT", default=30),
            "init_command": (
                "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; "
                "PRAGMA cache_size=-32768; PRAGMA wal_autocheckpoint=10000;"
            ),
        }
    )
    # Tests use a file beside the database (not an in-memory database) so that job
    # threads, the flusher and subprocesses such as `manage.py runjob` see the same data.
    _database_file = Path(DATABASES["default"]["NAME"])
    DATABASES["default"].setdefault("TEST", {})["NAME"] = str(_database_file.with_name(f"test_{_database_file.name}"))
else:
    DATABASES["default"].setdefault("CONN_HEALTH_CHECKS", True)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Auth -----------------------------------------------------------------------------------

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "admin:login"

# --- Internationalisation ------------------------------------------------------------------

LANGUAGE_CODE = "en-us"
TIME_ZONE = env("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True
# Times are shown as `DATETIME_FORMAT` of config/formats/en (the locale's format would
# win over a DATETIME_FORMAT setting); the job page's script writes the same.
FORMAT_MODULE_PATH = ["config.formats"]

# --- Static files (served by whitenoise under gunicorn) --------------------------------------

STATIC_URL = "static/"
STATIC_ROOT: Path | None = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

# --- HTTPS (turn on behind a TLS-terminating proxy) ------------------------------------------

SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if env.bool("BEHIND_HTTPS_PROXY", default=False) else None
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=False)
SESSION_COOKIE_SECURE = env.bool("SECURE_COOKIES", default=False)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE

# --- Logging --------------------------------------------------------------------------------
# The root logger passes INFO and up: that is what a job's log captures (see jobs.running.capture).
# The console shows LOG_LEVEL and up, and skips records that went to a job's log.

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"not_from_a_job": {"()": "jobs.running.capture.NotFromAJobFilter"}},
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["not_from_a_job"],
            "level": env("LOG_LEVEL", default="INFO"),
        },
    },
    "root": {"handlers": ["console"], "level": "INFO"},
}

# --- Where jobs run ---------------------------------------------------------------------------
# TASK_BACKEND picks the Tasks backend that executes runs:
#   threads   worker threads of the process that launched the run (no other service);
#   database  `manage.py db_worker` processes on any machine that reaches the database;
#   celery    Celery workers (`celery -A config worker`) fed through CELERY_BROKER_URL.

TASK_BACKENDS = {
    "threads": "jobs.running.threads_backend.ThreadsBackend",
    "database": "django_tasks_db.DatabaseBackend",
    "celery": "django_tasks_fennel.backend.CeleryBackend",
}
TASK_BACKEND = env.str("TASK_BACKEND", default="threads")
if TASK_BACKEND not in TASK_BACKENDS:
    raise ImproperlyConfigured(f"TASK_BACKEND must be one of {', '.join(TASK_BACKENDS)}, not {TASK_BACKEND!r}.")
TASKS = {"default": {"BACKEND": TASK_BACKENDS[TASK_BACKEND]}}
if TASK_BACKEND == "celery":
    INSTALLED_APPS.append("django_tasks_fennel")

CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="redis://127.0.0.1:6379/0")
# Runs keep their own state in the database: Celery needs no result backend.
CELERY_RESULT_BACKEND = None
# A message is acknowledged when its task returns, so a run whose worker died before it
# started is delivered again; Runlog's claim makes a second delivery of a started run a no-op.
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# The queue the Tasks framework names "default" is the one workers consume.
CELERY_TASK_DEFAULT_QUEUE = "default"

# --- Runlog ---------------------------------------------------------------------------------
# Defaults live in jobs/conf.py; each can be set here or in the environment.

RUNLOG_WORKERS = env.int("RUNLOG_WORKERS", default=4)
RUNLOG_MAX_LINES = env.int("RUNLOG_MAX_LINES", default=5_000_000)
RUNLOG_SHUTDOWN_GRACE = env.float("RUNLOG_SHUTDOWN_GRACE", default=15.0)
RUNLOG_RETENTION = env.str("RUNLOG_RETENTION", default=None)
RUNLOG_BASE_URL = env.str("RUNLOG_BASE_URL", default="")
if "RUNLOG_MAX_STREAMS" in env:
    RUNLOG_MAX_STREAMS = env.int("RUNLOG_MAX_STREAMS")
if "RUNLOG_PAGE_THREADS" in env:
    RUNLOG_PAGE_THREADS = env.int("RUNLOG_PAGE_THREADS")
if "RUNLOG_STREAM_RETRY_AFTER" in env:
    RUNLOG_STREAM_RETRY_AFTER = env.int("RUNLOG_STREAM_RETRY_AFTER")
if "RUNLOG_VIEWER_DATABASE_SLOTS" in env:
    RUNLOG_VIEWER_DATABASE_SLOTS = env.int("RUNLOG_VIEWER_DATABASE_SLOTS")
