"""gunicorn settings for Runlog: `gunicorn --config config/gunicorn.conf.py`.

The config picks the application: by default uvicorn workers serve config.asgi (pages on
a pool of threads, each live stream a coroutine: jobs.asgi); GUNICORN_WORKER_CLASS=gthread
serves config.wsgi with threads, where each stream holds a thread. README, "Serving", has
how many viewers each holds.

Each worker process runs its own job runner (started by config.wsgi / config.asgi), so the
app is not preloaded: threads do not survive a fork.
"""

import os
import resource
import signal
import threading
from typing import Any

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", "2"))
if os.environ.get("GUNICORN_WORKER_CLASS", "uvicorn") == "gthread":
    wsgi_app = "config.wsgi:application"
    worker_class = "gthread"
    # Threads serve requests (and, with TASK_BACKEND=threads, jobs run beside them); each
    # live viewer holds one while it is connected. gthread does not share connections
    # evenly between workers, so each worker has threads enough for its viewers and pages.
    threads = int(os.environ.get("GUNICORN_THREADS", "256"))
    # A stream past this many gets 503 and comes back later, so that a quarter of the
    # threads always serve pages.
    os.environ.setdefault("RUNLOG_MAX_STREAMS", str(threads * 3 // 4))
else:
    wsgi_app = "config.asgi:application"
    worker_class = "uvicorn_worker.UvicornWorker"
# A crowd of viewers reconnecting at once (a deploy, a proxy restart) waits in the listen
# queue rather than being refused; the kernel caps it at net.core.somaxconn.
backlog = 4096
# Every open stream is a file descriptor; the usual soft limit (1024) would refuse
# connections long before the streams' own limit (RUNLOG_MAX_STREAMS).
_soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (max(_soft, min(_hard, 1 << 20)), _hard))
preload_app = False
# Runs get RUNLOG_SHUTDOWN_GRACE (15 s) to stop when a worker stops; this leaves room for
# storing their lines and ending them before gunicorn kills the worker.
graceful_timeout = 30
timeout = 60
accesslog = "-"


def post_worker_init(worker: Any) -> None:
    """On SIGTERM, a worker stops taking requests and waits up to graceful_timeout for the
    ones in flight. Runlog starts ending its runs at the same moment, in the background (a
    signal handler must return at once): their lines are stored, each ends with a truthful
    status, and then the worker's event streams end, so that their clients reconnect
    elsewhere instead of holding the worker until the timeout. (Under uvicorn workers the
    server's own handler replaces this one while it serves; jobs.asgi chains onto it.)"""
    stop_taking_requests = worker.handle_exit

    def handle_exit(signum: int, frame: Any) -> None:
        stop_taking_requests(signum, frame)
        from jobs.running.runner import get_runner

        threading.Thread(target=get_runner().shut_down, name="runlog-shutdown").start()

    signal.signal(signal.SIGTERM, handle_exit)


def worker_exit(server: Any, worker: Any) -> None:
    """The last moment in the worker: wait for (or do) the shutdown of its runs."""
    from jobs.running.runner import get_runner

    get_runner().shut_down()
