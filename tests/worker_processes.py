"""How the tests and benchmarks start worker processes of each task backend."""

from __future__ import annotations

import sys

#: A line in a worker's output that says it takes tasks now.
READY = {"database": "Starting worker", "celery": " ready."}


def worker_command(backend: str, name: str, *args: str) -> list[str]:
    """The command line of a worker of `backend` ("database" or "celery") called `name`."""
    if backend == "database":
        return [sys.executable, "manage.py", "db_worker", "--no-startup-delay", "--worker-id", name, *args]
    return [
        sys.executable, "-m", "celery", "-A", "config", "worker", "-n", f"{name}@%h", "--loglevel", "INFO",
        "--without-gossip", "--without-mingle", "--without-heartbeat", *args,
    ]  # fmt: skip
