"""Shared fixtures. Tests that run jobs need `django_db(transaction=True)`: the runner's
threads and subprocesses use their own connections, so the data must be committed."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn, TypeVar

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


def missing_tool(message: str) -> NoReturn:
    """Skip a test whose outside program (chromium, nginx) is not installed. `.ci/run`
    installs them and sets RUNLOG_REQUIRE_TOOLS=1: there a missing one is a failure."""
    if os.environ.get("RUNLOG_REQUIRE_TOOLS") == "1":
        pytest.fail(message, pytrace=False)
    pytest.skip(message, allow_module_level=True)


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


class LiveServer:
    """A real gunicorn serving the project against the test database, in a child process."""

    def __init__(self, url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
        self.url = url
        self.process = process
        self.log_path = log_path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_gunicorn(env: dict[str, str], log_path: Path, *extra_args: str) -> LiveServer:
    port = free_port()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "config.wsgi", "--config", "config/gunicorn.conf.py",
             "--bind", f"127.0.0.1:{port}", *extra_args],
            cwd=PROJECT_DIR, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    server = LiveServer(f"http://127.0.0.1:{port}", process, log_path)

    def answers() -> bool:
        if process.poll() is not None:
            pytest.fail(f"gunicorn exited with {process.returncode}:\n{server.log()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            return False

    wait_for(answers, "gunicorn to listen")
    return server


def stop_server(server: LiveServer) -> None:
    if server.process.poll() is None:
        os.killpg(server.process.pid, signal.SIGTERM)
        try:
            server.process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(server.process.pid, signal.SIGKILL)
            server.process.wait()


@pytest.fixture
def live_server_gunicorn(subprocess_env: dict[str, str], tmp_path: Path) -> Iterator[LiveServer]:
    """gunicorn with the project's config (2 workers) on a free loopback port."""
    server = start_gunicorn(subprocess_env, tmp_path / "gunicorn.log")
    yield server
    stop_server(server)


@pytest.fixture
def staff_user(transactional_db: Any) -> Any:
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create_superuser("staff", "staff@example.com", "staff-password")


@pytest.fixture
def session_cookie(staff_user: Any) -> str:
    """`Cookie` header value of a logged-in superuser session, for HTTP clients of a live server."""
    from django.test import Client

    client = Client()
    client.force_login(staff_user)
    return f"sessionid={client.cookies['sessionid'].value}"
