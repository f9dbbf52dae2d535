"""Shared fixtures. Tests that run jobs need `django_db(transaction=True)`: the runner's
threads and subprocesses use their own connections, so the data must be committed."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn, TypeVar
from urllib.parse import urlencode

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.db import connection
from django.test import Client
from django.utils import timezone
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from jobs.launcher import cancel_run, create_run, launch
from jobs.logstore.notify import announce
from jobs.models import Job, JobStatus, LogLine
from jobs.running.runner import get_runner
from jobs.tasks import run_job
from tests.sse_client import HttpStream, Line, request

# Property tests: "ci" (the default) is sized to keep CI fast; "thorough" is for a nightly
# or manual run: HYPOTHESIS_PROFILE=thorough make test. Tests scale from max_examples.
_PROPERTY_DEFAULTS: dict[str, Any] = {
    "database": None,  # no example database in the project's directory
    "deadline": None,
    "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
}
hypothesis_settings.register_profile("ci", max_examples=30, **_PROPERTY_DEFAULTS)
hypothesis_settings.register_profile("thorough", max_examples=500, **_PROPERTY_DEFAULTS)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

PROJECT_DIR = Path(__file__).resolve().parent.parent
#: Seconds to wait for something that should happen soon: a generous bound that only a
#: broken product reaches, never a pause a test relies on.
WAIT = 60.0

Result = TypeVar("Result")

#: (method, URL pattern) of every page and endpoint of one run; `{}` stands for its id.
RUN_URLS = [
    ("get", "/jobs/{}/"),
    ("get", "/jobs/{}/log.txt"),
    ("get", "/jobs/{}/events"),
    ("get", "/jobs/{}/lines"),
    ("get", "/jobs/{}/search?q=line"),
    ("get", "/jobs/{}/status"),
    ("post", "/jobs/{}/cancel"),
    ("post", "/jobs/{}/rerun"),
]


@pytest.fixture(scope="session", autouse=True)
def _release_background_connections(django_db_setup: Any, django_db_blocker: Any) -> Iterator[None]:
    """The runner's supervisor and flusher threads hold connections to the test database;
    it can only be dropped once they let go."""
    yield

    get_runner().stop()
    if connection.vendor == "postgresql":
        with django_db_blocker.unblock(), connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that stops the PostgreSQL server would break the tests of other xdist workers
    running beside it: in a worker it is skipped (`make test` runs it alone afterwards)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        alone = pytest.mark.skip(reason="stops the shared PostgreSQL server: run it without xdist")
        for item in items:
            if item.get_closest_marker("stops_database"):
                item.add_marker(alone)


def missing_tool(message: str) -> NoReturn:
    """Skip a test whose outside program (chromium, nginx) is not installed. `.ci/run`
    installs them and sets RUNLOG_REQUIRE_TOOLS=1: there a missing one is a failure."""
    if os.environ.get("RUNLOG_REQUIRE_TOOLS") == "1":
        pytest.fail(message, pytrace=False)
    pytest.skip(message, allow_module_level=True)


def enqueue(job: Job) -> None:
    """Hand a queued run to the task backend, as a launch does once its transaction commits."""
    run_job.enqueue(str(job.id))


def run_now(name: str, **params: Any) -> Job:
    """Create a run of `name` and run it in this thread through this process's runner."""
    from jobs.launcher import create_run
    from jobs.running.runner import start

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


def stored_lines(job: Job) -> list[Line]:
    rows = LogLine.objects.filter(job=job).order_by("number").values_list("number", "stream", "created_at", "text")
    return [(number, stream, created_at.isoformat(), text) for number, stream, created_at, text in rows]


def running_run() -> Job:
    """A running run of no process: its lines are written by the test, as a flusher would."""
    return Job.objects.create(name="demo.echo", params={}, status=JobStatus.RUNNING, started_at=timezone.now())


def store_lines(job: Job, first: int, last: int) -> None:
    """Store lines `first`..`last` of `job` ("line N"), count and announce them, as its
    flusher would."""
    now = timezone.now()
    LogLine.objects.bulk_create(
        LogLine(job=job, number=n, text=f"line {n}", created_at=now) for n in range(first, last + 1)
    )
    Job.objects.filter(pk=job.pk).update(line_count=last)
    announce(job.id, last)


class LocalRuns:
    """Runs of this test process (for a server: runs of another process)."""

    def __init__(self) -> None:
        self.runs: list[Job] = []
        self.held: list[Job] = []

    def launch(self, name: str, **params: Any) -> Job:
        job = launch(name, **params)
        self.runs.append(job)
        return job

    def create(self, name: str, **params: Any) -> Job:
        """A queued run that starts only on `start(job)`: a viewer can connect first, so
        that every line it gets is a live one."""
        job = create_run(name, params)
        self.runs.append(job)
        self.held.append(job)
        return job

    def start(self, job: Job) -> None:
        self.held.remove(job)
        enqueue(job)

    def finish(self) -> None:
        """Cancel what still runs and wait for it, so that no job writes into the database
        while the test's data is flushed."""
        for job in list(self.held):
            self.start(job)
        for job in self.runs:
            cancel_run(job.id)
        if self.runs:
            wait_finished(*self.runs)


@pytest.fixture
def local_runs() -> Iterator[LocalRuns]:
    runs = LocalRuns()
    yield runs
    runs.finish()


@pytest.fixture(scope="session")
def test_database_env(django_db_setup: Any) -> dict[str, str]:
    """Environment for a child process that uses the test database: this xdist worker's
    own, whose name pytest-django suffixes per worker."""
    settings_dict = connection.settings_dict
    if connection.vendor == "sqlite":
        url = f"sqlite:///{settings_dict['NAME']}"
    else:
        url = "postgres://{USER}@{HOST}:{PORT}/{NAME}".format(
            **{k: settings_dict[k] or "" for k in ("USER", "HOST", "PORT", "NAME")}
        )
    return {**os.environ, "DATABASE_URL": url, "DJANGO_SETTINGS_MODULE": "tests.settings", "PYTHONUNBUFFERED": "1"}


@pytest.fixture
def subprocess_env(transactional_db: Any, test_database_env: dict[str, str]) -> dict[str, str]:
    """Environment for a child process (e.g. manage.py runjob) that uses the test database."""
    return dict(test_database_env)


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
            [sys.executable, "-m", "gunicorn", "--config", "config/gunicorn.conf.py",
             "--bind", f"127.0.0.1:{port}", *extra_args],
            cwd=PROJECT_DIR, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    wait_listening(process, port, log_path, "gunicorn")
    return LiveServer(f"http://127.0.0.1:{port}", process, log_path)


def wait_listening(process: subprocess.Popen[bytes], port: int, log_path: Path, name: str) -> None:
    """Wait until the server `process` accepts connections on `port`; fail if it exits."""

    def listens() -> bool:
        if process.poll() is not None:
            pytest.fail(f"{name} exited with {process.returncode}:\n{log_path.read_text(errors='replace')}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            return False

    wait_for(listens, f"{name} to listen")


def stop_process(process: subprocess.Popen[bytes], grace: float = WAIT, *, group: bool = False) -> None:
    """SIGTERM, then SIGKILL if it is still there after `grace` seconds. With `group`, to
    its whole process group (gunicorn's workers are in its group)."""
    if process.poll() is not None:
        return

    def send(signum: int) -> None:
        if group:
            os.killpg(process.pid, signum)
        else:
            process.send_signal(signum)

    send(signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        process.wait()


def stop_server(server: LiveServer) -> None:
    stop_process(server.process, 40, group=True)


@pytest.fixture(scope="session")
def live_server_gunicorn(
    test_database_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """gunicorn with the project's config (2 workers) on a free loopback port, shared by
    the tests of a test process: a test that kills or stops a server, or needs other
    settings, starts its own. It runs beside every test of the process, so it does not
    judge the runs of other processes lost (the tests of that do it themselves)."""
    env = {**test_database_env, "RUNLOG_LOST_AFTER": "3600"}
    server = start_gunicorn(env, tmp_path_factory.mktemp("gunicorn") / "gunicorn.log")
    yield server
    stop_server(server)


def _start_process(args: list[str], env: dict[str, str], log_path: Path, port: int) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            args, cwd=PROJECT_DIR, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def answers() -> bool:
        if process.poll() is not None:
            pytest.fail(f"{args[0]} exited with {process.returncode}:\n{log_path.read_text(errors='replace')}")
        try:
            status, _, _ = request(f"http://127.0.0.1:{port}/admin/login/", timeout=5)
            return status == 200
        except OSError:
            return False

    wait_for(answers, f"{args} to answer")
    return process


#: nginx as the tests run it: in the foreground, its files in {tmp}, serving {servers} (server
#: blocks and what they need). The access log says which protocol each request came in.
NGINX_CONF = """\
daemon off;
master_process off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log info;
events {{ worker_connections 256; }}
http {{
    log_format protocol '$server_protocol $status $request_uri';
    access_log {tmp}/nginx-access.log protocol;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
{servers}
}}
"""

#: A plain HTTP proxy with nginx's defaults (proxy_buffering on, HTTP/1.0 upstream): the
#: app's X-Accel-Buffering: no is what must turn buffering off for the stream.
PLAIN_PROXY = """\
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass {upstream};
            proxy_set_header Host $http_host;
        }}
    }}
"""


def start_nginx(tmp_path: Path, port: int, servers: str) -> subprocess.Popen[bytes]:
    """nginx serving `servers` (see NGINX_CONF) on `port`; skips the test without nginx."""
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if nginx is None:
        missing_tool("nginx is not installed (apt-get install nginx-light)")
    conf = tmp_path / "nginx.conf"
    conf.write_text(NGINX_CONF.format(tmp=tmp_path, servers=servers))
    log_path = tmp_path / "nginx.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen([nginx, "-p", str(tmp_path), "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
    wait_listening(process, port, log_path, "nginx")
    return process


@pytest.fixture(params=["runserver", "waitress", "nginx"])
def other_server(
    request: pytest.FixtureRequest, subprocess_env: dict[str, str], tmp_path: Path
) -> Iterator[tuple[str, Callable[[], str]]]:
    """(base URL, the server's log) of a server that is not plain gunicorn."""
    port = free_port()
    log_path = tmp_path / f"{request.param}.log"
    if request.param == "runserver":
        args = [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"]
        process = _start_process(args, subprocess_env, log_path, port)
        yield f"http://127.0.0.1:{port}", lambda: log_path.read_text(errors="replace")
        stop_process(process)
    elif request.param == "waitress":
        waitress = Path(sys.executable).with_name("waitress-serve")
        if not waitress.exists():
            pytest.skip("waitress is not installed (requirements/dev.txt)")
        args = [str(waitress), f"--port={port}", "--host=127.0.0.1", "config.wsgi:application"]
        process = _start_process(args, subprocess_env, log_path, port)
        yield f"http://127.0.0.1:{port}", lambda: log_path.read_text(errors="replace")
        stop_process(process)
    else:
        upstream = start_gunicorn(subprocess_env, tmp_path / "gunicorn.log")
        try:
            process = start_nginx(tmp_path, port, PLAIN_PROXY.format(port=port, upstream=upstream.url))
            yield f"http://127.0.0.1:{port}", lambda: upstream.log() + (tmp_path / "nginx-error.log").read_text()
            stop_process(process)
        finally:
            stop_server(upstream)


# --- Users and their sessions ---------------------------------------------------------------------


def user_with(*permissions: str, staff: bool = True, superuser: bool = False) -> Any:
    """A new user, staff or not, with exactly these `jobs` permissions (codenames); a
    superuser has every permission."""
    user_model = get_user_model()
    username = f"user-{uuid.uuid4().hex[:8]}"
    if superuser:
        return user_model.objects.create_superuser(username, f"{username}@example.com", "pw")
    user = user_model.objects.create_user(username, password="pw", is_staff=staff)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="jobs", codename__in=permissions))
    return user


def client_for(user: Any, **options: Any) -> Client:
    """A test client (`options` as Client's) logged in as `user`."""
    client = Client(**options)
    client.force_login(user)
    return client


@pytest.fixture
def staff_user(transactional_db: Any) -> Any:
    return get_user_model().objects.create_superuser("staff", "staff@example.com", "staff-password")


def session_cookie_of(user: Any) -> str:
    """`Cookie` header value of a logged-in session of `user`."""
    return f"sessionid={client_for(user).cookies['sessionid'].value}"


@pytest.fixture
def session_cookie(staff_user: Any) -> str:
    """`Cookie` header value of a logged-in superuser session, for HTTP clients of a live server."""
    return session_cookie_of(staff_user)


# --- A live server's pages and streams, over HTTP --------------------------------------------------

#: A run's permalink, as a launch redirects to it and as `manage.py runjob` prints it first.
PERMALINK = re.compile(r"/jobs/(?P<id>[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})/")

#: gunicorn's access log with the worker's pid, to see which worker served each request.
ACCESS_LOG_FORMAT = 'pid=%(p)s "%(r)s" %(s)s'

#: How a client that reconnects tells the events stream the last line it has.
RESUME_MODES = ("last_event_id", "offset", "both")


def csrf_of(page_url: str, cookie: str) -> tuple[str, str]:
    """(form token, Cookie header with the CSRF cookie) from a page with a form, as a
    browser has them."""
    status, headers, body = request(page_url, headers={"Cookie": cookie}, timeout=WAIT)
    assert status == 200, body[:500]
    token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', body)
    csrf_cookie = re.search(r"csrftoken=([^;,\s]+)", headers.get("set-cookie", ""))
    assert token and csrf_cookie, f"{page_url} has no CSRF token"
    return token[1].decode(), f"{cookie}; csrftoken={csrf_cookie[1]}"


def launch_url(server_url: str, name: str) -> str:
    """The admin's launch form of the job `name`."""
    return f"{server_url}/admin/jobs/job/launch/{name}/"


def post_launch_form(url: str, token: str, cookies: str, **params: Any) -> uuid.UUID:
    """Submit a launch form with the token and cookies of `csrf_of(url, ...)`; the new run's id."""
    form = urlencode({"csrfmiddlewaretoken": token, **params}).encode()
    status, headers, body = request(
        url,
        method="POST",
        body=form,
        headers={"Cookie": cookies, "Content-Type": "application/x-www-form-urlencoded"},
        timeout=WAIT,
    )
    assert status == 302, body[:1000]
    match = PERMALINK.search(headers["location"])
    assert match, headers["location"]
    return uuid.UUID(match["id"])


def launch_in_server(server_url: str, cookie: str, name: str, **params: Any) -> Job:
    """Launch a run through the admin's launch form, so that it runs inside the server."""
    url = launch_url(server_url, name)
    token, cookies = csrf_of(url, cookie)
    return Job.objects.get(pk=post_launch_form(url, token, cookies, **params))


def get_log(server: LiveServer, job: Job, cookie: str, **query: Any) -> tuple[int, str]:
    url = f"{server.url}/jobs/{job.id}/log.txt" + (f"?{urlencode(query)}" if query else "")
    status, headers, body = request(url, headers={"Cookie": cookie}, timeout=WAIT)
    if status == 200:
        assert headers["content-type"] == "text/plain; charset=utf-8"
    return status, body.decode("utf-8")


def events_url(server: LiveServer | str, job: Job, **query: Any) -> str:
    base = server if isinstance(server, str) else server.url
    return f"{base}/jobs/{job.id}/events" + (f"?{urlencode(query)}" if query else "")


def open_events(
    base: LiveServer | str,
    job: Job,
    cookie: str,
    *,
    last_event_id: int | None = None,
    keep_alive: bool = False,
    **query: Any,
) -> HttpStream:
    headers = {"Cookie": cookie, "Accept": "text/event-stream"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = str(last_event_id)
    return HttpStream(events_url(base, job, **query), headers=headers, timeout=WAIT, keep_alive=keep_alive)


def resume_events(base: LiveServer | str, job: Job, cookie: str, mode: str, last: int) -> HttpStream:
    """Reconnect to the events after line `last`, the way `mode` (of RESUME_MODES) says."""
    if mode == "last_event_id":
        return open_events(base, job, cookie, last_event_id=last)
    if mode == "offset":
        return open_events(base, job, cookie, offset=last)
    # The header wins over an offset that would repeat every line.
    return open_events(base, job, cookie, last_event_id=last, offset=0)
