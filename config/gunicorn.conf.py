"""gunicorn settings for Runlog: `gunicorn config.wsgi --config config/gunicorn.conf.py`.

Each worker process runs its own job runner (started by config.wsgi), so the app is not
preloaded: threads do not survive a fork.
"""

import os
import signal
import threading
from typing import Any

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", "2"))
# Threads serve requests (and, with TASK_BACKEND=threads, jobs run beside them). Each live
# viewer (an event stream) holds a thread while it is connected, but costs no CPU while
# idle. gthread does not share connections evenly between workers, so each worker has
# threads enough for all the viewers and the admin (README, "Performance", has the
# figures). More viewers: raise GUNICORN_THREADS.
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "256"))
# A stream past this many gets 503 and comes back later, so that a quarter of the threads
# always serve pages.
os.environ.setdefault("RUNLOG_MAX_STREAMS", str(threads * 3 // 4))
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
    elsewhere instead of holding the worker until the timeout."""
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
