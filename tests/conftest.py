"""Shared fixtures. Tests that run jobs need `django_db(transaction=True)`: the runner's
threads and subprocesses use their own connections, so the data must be committed."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from django.db import connection

from jobs.models import Job, LogLine

PROJECT_DIR = Path(__file__).resolve().parent.parent
#: Seconds to wait for something that should happen soon: a generous bound that only a
#: broken product reaches, never a pause a test relies on.
WAIT = 60.0

Result = TypeVar("Result")


@pytest.fixture(scope="session", autouse=True)
def _release_background_connections(django_db_setup: Any, django_db_blocker: Any) -> Iterator[None]:
    """The runner's supervisor and flusher threads hold connections to the test database;
    it can only be dropped once they let go."""
    yield
    from jobs.runner import get_runner

    get_runner().stop()
    if connection.vendor == "postgresql":
        with django_db_blocker.unblock(), connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )


def run_now(name: str, **params: Any) -> Job:
    """Create a run of `name` and run it in this thread through this process's runner."""
    from jobs.launcher import create_run
    from jobs.runner import start

    job = create_run(name, params)
    return start().run(job)


def wait_for(predicate: Callable[[], Result], what: str, timeout: float = WAIT) -> Result:
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"gave up after {timeout:g} s waiting for {what}")
        time.sleep(0.02)


def wait_finished(*runs: Job, timeout: float = WAIT) -> Job:
    """Poll the database until every run has finished (a launched job runs in a worker);
    returns the last run, refreshed."""
    for run in runs:

        def finished(run: Job = run) -> bool:
            run.refresh_from_db()
            return run.is_finished

        wait_for(finished, f"{run} to finish", timeout)
    return runs[-1]


def log_texts(job: Job, stream: str | None = None) -> list[str]:
    lines = LogLine.objects.filter(job=job).order_by("number")
    if stream is not None:
        lines = lines.filter(stream=stream)
    return list(lines.values_list("text", flat=True))


def assert_contiguous(job: Job) -> None:
    """Lines are numbered 1..line_count with no gap and no duplicate."""
    job.refresh_from_db()
    numbers = list(LogLine.objects.filter(job=job).order_by("number").values_list("number", flat=True))
    assert numbers == list(range(1, job.line_count + 1))


@pytest.fixture
def subprocess_env(transactional_db: Any) -> dict[str, str]:
    """Environment for a child process (e.g. manage.py runjob) that uses the test database."""
    settings_dict = connection.settings_dict
    if connection.vendor == "sqlite":
        url = f"sqlite:///{settings_dict['NAME']}"
    else:
        url = "postgres://{USER}@{HOST}:{PORT}/{NAME}".format(
            **{k: settings_dict[k] or "" for k in ("USER", "HOST", "PORT", "NAME")}
        )
    return {**os.environ, "DATABASE_URL": url, "DJANGO_SETTINGS_MODULE": "tests.settings", "PYTHONUNBUFFERED": "1"}


@pytest.fixture
def manage(subprocess_env: dict[str, str]) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run `manage.py ARGS` in a child process against the test database."""

    def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=PROJECT_DIR,
            env=subprocess_env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run
