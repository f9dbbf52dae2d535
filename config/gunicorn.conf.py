"""gunicorn settings for Runlog: `gunicorn config.wsgi --config config/gunicorn.conf.py`.

Each worker process runs its own job runner (started by config.wsgi), so the app is not
preloaded: threads do not survive a fork.
"""

import os

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", "2"))
# Threads serve requests while job threads run beside them in the same process.
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "16"))
preload_app = False
# Give running jobs time to store their lines when a worker stops.
graceful_timeout = 30
timeout = 60
accesslog = "-"
