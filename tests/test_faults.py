"""Faults: what a run's log keeps when something breaks under it.

1. The process running a job is killed (`kill -9`): a `manage.py runjob` child, or the
   gunicorn worker that runs an admin-launched run. Another process marks the run lost
   within 30 s, every line stored before the kill is intact and contiguous, and (for the
   runjob child, whose job reports each print on a side channel) the lines printed but not
   stored are counted: the loss window.
2. PostgreSQL restarted under a printing run: the writer retries and nothing is lost or
   repeated; a database that stays away past RUNLOG_DATABASE_RETRY_LIMIT fails the run with
   a clear reason once it is back, even when it stays away past every retry of the
   run's end. These stop the shared PostgreSQL server for a few seconds each, and always
   start it again. A storage failure simulated on both databases shows the reason is on
   one line, as Job.error and a log line must be.
3. 50 concurrent runs inside gunicorn (2 workers): no cross-talk, every log complete.
4. 100 viewer disconnects during a 5,000-line run, each resumed from the last line
   received, straight to gunicorn and through nginx: the concatenation is the stored log.

The only timed assertion is how soon a lost run is noticed (LOST_WITHIN); every other
wait is the generous WAIT of conftest.
"""

from __future__ import annotations

import logging
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest
from django.db import OperationalError, connection

import jobs
from jobs import job, sleep
from jobs.conf import runlog_settings
from jobs.logstore import storage
from jobs.models import Job, JobStatus, LogLine, LogStream
from jobs.running.runner import start as start_runner
from tests.conftest import (
    ACCESS_LOG_FORMAT,
    PERMALINK,
    PROJECT_DIR,
    RESUME_MODES,
    WAIT,
    LiveServer,
    LocalRuns,
    assert_contiguous,
    csrf_of,
    get_log,
    launch_in_server,
    launch_url,
    log_texts,
    missing_tool,
    open_events,
    post_launch_form,
    resume_events,
    start_gunicorn,
    stop_server,
    stored_lines,
    wait_finished,
    wait_for,
)
from tests.sse_client import Line, SseParser, line_of, request

pytestmark = pytest.mark.django_db(transaction=True)

#: The bound on noticing a run whose process was killed.
LOST_WITHIN = 30.0

postgresql_only = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="restarts the PostgreSQL server (SQLite has no server to restart)"
)


def counted(texts: list[str], n: int) -> bool:
    return texts == [f"Task #{index}" for index in range(n)]


def assert_lost_log(run: Job, *, task_lines: bool = True) -> tuple[int, str]:
    """A lost run's log: its printed lines (Task #0..#k-1 for demo.count), contiguous, then
    one system line saying why. Returns (k, that line)."""
    assert_contiguous(run)
    rows = list(LogLine.objects.filter(job=run).order_by("number").values_list("stream", "text"))
    assert rows, "a lost run has at least its system line"
    *printed, (last_stream, reason) = rows
    assert last_stream == LogStream.SYSTEM and reason.startswith("Run lost: "), rows[-3:]
    assert {stream for stream, _ in printed} <= {LogStream.STDOUT}
    if task_lines:
        assert counted([text for _, text in printed], len(printed)), "a stored line is missing, repeated or altered"
    assert run.error == reason
    return len(printed), reason


# --- 1a. kill -9 of a `manage.py runjob` ---------------------------------------------------------------

#: `manage.py runjob ARGS` in a child whose demo job also reports each print() on a side
#: channel, once print() has returned (the line is then in the run's writer): a
#: "time text" line per print, written with os.write to a file the capture does not see.
RUNJOB_WITH_SIDE_CHANNEL = """\
import builtins, os, sys, time
import django
django.setup()
import jobs.demo
side = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
def print(*args, **kwargs):
    builtins.print(*args, **kwargs)
    os.write(side, f"{time.time():.6f} {' '.join(map(str, args))}\\n".encode())
jobs.demo.print = print  # the demo jobs' print() (a module global shadows the builtin)
from django.core.management import execute_from_command_line
execute_from_command_line(["manage.py", "runjob", *sys.argv[2:]])
"""


class LineReader:
    """Reads a child's pipe into a list of lines as they come (so its pipe never fills)."""

    def __init__(self, stream: IO[str] | None) -> None:
        assert stream is not None
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.append(line.rstrip("\n"))

    def join(self) -> None:
        self._thread.join(WAIT)


@contextmanager
def runjob_in_own_group(env: dict[str, str], side_channel: Path, *args: str) -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(
        [sys.executable, "-c", RUNJOB_WITH_SIDE_CHANNEL, str(side_channel), *args],
        cwd=PROJECT_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,  # its own process group: kill -9 takes the whole of it
    )  # fmt: skip
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(WAIT)


@dataclass
class Print:
    wall: float
    text: str


def read_side_channel(path: Path) -> list[Print]:
    prints = []
    for line in path.read_text().splitlines():
        stamp, _, text = line.partition(" ")
        prints.append(Print(float(stamp), text))
    return prints


KILL_CASES = {
    # (the job's arguments, the echoed lines after which it is killed)
    "count": (["demo.count", "n=100000", "interval=0.01"], 150),  # about 100 lines/s
    "flood": (["demo.flood", "lines=5000000", "width=40"], 20_000),  # as fast as it can
}


@pytest.mark.parametrize(
    ("case", "noticed_by"),
    [("count", "stale_heartbeat"), ("count", "dead_pid_at_start_up"), ("flood", "stale_heartbeat")],
)
def test_kill_9_of_runjob_loses_at_most_the_batch_in_flight(
    subprocess_env: dict[str, str], tmp_path: Path, case: str, noticed_by: str
) -> None:
    """SIGKILL to `manage.py runjob demo.count n=100000 interval=0.01` (its whole process
    group) while it prints, and to a `demo.flood` at full speed. Noticed either by this
    process's supervisor (the run's heartbeat is RUNLOG_LOST_AFTER old) or by a new
    `manage.py` process whose supervisor sees, at start-up, that the owner's pid on this
    host is gone."""
    args, kill_after = KILL_CASES[case]
    runner = start_runner()  # this process's supervisor sweeps stale runs
    side_channel = tmp_path / "prints.txt"
    with runjob_in_own_group(subprocess_env, side_channel, *args) as process:
        stdout, stderr = LineReader(process.stdout), LineReader(process.stderr)
        wait_for(lambda: len(stdout.lines) > kill_after or process.poll() is not None, "runjob to echo its lines")
        assert process.poll() is None, stderr.lines
        match = PERMALINK.fullmatch(stdout.lines[0])
        assert match, stdout.lines[:2]
        run = Job.objects.get(pk=uuid.UUID(match["id"]))
        pid = int(run.worker.split(":")[1])
        assert pid == process.pid, f"runjob is not the run's owner: {run.worker}"
        if noticed_by == "dead_pid_at_start_up":
            runner.stop()  # so that only the new process can notice it, and only by the pid

        killed_at = time.time()
        os.killpg(process.pid, signal.SIGKILL)
        assert process.wait(WAIT) == -signal.SIGKILL
        stdout.join()
        stderr.join()
    started = time.monotonic()
    try:
        if noticed_by == "dead_pid_at_start_up":
            other = subprocess.run(
                [sys.executable, "manage.py", "runjob", "demo.echo", "text=another process starts"],
                cwd=PROJECT_DIR, env=subprocess_env, capture_output=True, text=True, timeout=WAIT,
            )  # fmt: skip
            assert other.returncode == 0, other.stderr
        wait_for(lambda: Job.objects.get(pk=run.pk).status == JobStatus.LOST, "the run to be marked lost", LOST_WITHIN)
    finally:
        runner.start()
    noticed_after = time.monotonic() - started
    run.refresh_from_db()

    stored, reason = assert_lost_log(run, task_lines=case == "count")
    if noticed_by == "stale_heartbeat":
        assert "stopped sending heartbeats" in reason, reason
    else:
        assert f"(pid {pid} on {socket.gethostname()}) has exited" in reason, reason
    texts = log_texts(run)
    # runjob echoes a line once it is stored: what it echoed is a prefix of the stored log.
    echoed = stdout.lines[1:]
    assert echoed == texts[: len(echoed)]

    # The loss window: lines whose print() had returned, but that were not stored.
    prints = read_side_channel(side_channel)
    # The kill can land between a print() and its report on the side channel: that line is
    # stored but not reported, so the log may hold one line more than the reports.
    assert len(prints) >= stored - 1, "a line was stored that the job never printed"
    reported = min(stored, len(prints))
    assert [p.text for p in prints[:reported]] == texts[:reported], "the stored lines are not what the job printed"
    lost = max(len(prints) - stored, 0)
    died_at = max(killed_at, prints[-1].wall)
    window_ms = (died_at - prints[stored].wall) * 1000 if lost else 0.0
    last_second = sum(1 for p in prints if p.wall > died_at - 1.0)
    print(
        f"\n{case}, {noticed_by}: {len(prints)} lines printed, {stored} stored, {lost} lost (the oldest lost "
        f"line was printed {window_ms:.1f} ms before the kill; {len(echoed)} echoed by runjob); {last_second} "
        f"printed in the last second; marked lost {noticed_after:.2f} s after the kill: {reason!r}"
    )
    # What is not stored is at most the writer's buffer and the batch taken from it (a line
    # is at least one chunk: WRITER_BUFFER bounds both); at demo.count's pace, less than
    # what it printed in its last second.
    assert lost <= 2 * runlog_settings.WRITER_BUFFER
    if case == "count":
        assert lost <= last_second, f"{lost} lines lost: more than one second of output ({last_second})"


# --- 1b. kill -9 of the gunicorn worker running a run ------------------------------------------------


def children_of(pid: int) -> set[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return {int(child) for child in path.read_text().split()} if path.exists() else set()


@pytest.fixture
def own_gunicorn(subprocess_env: dict[str, str], tmp_path: Path) -> Iterator[LiveServer]:
    """A server of the test's own, for a test that kills one of its workers."""
    server = start_gunicorn(subprocess_env, tmp_path / "gunicorn.log")
    yield server
    stop_server(server)


def test_kill_9_of_the_gunicorn_worker_running_a_run(own_gunicorn: LiveServer, session_cookie: str) -> None:
    server = own_gunicorn
    run = launch_in_server(server.url, session_cookie, "demo.count", n=100_000, interval=0.01)

    def printing() -> Job | None:
        current = Job.objects.get(pk=run.pk)
        return current if current.line_count >= 100 else None

    run = wait_for(printing, "the run to store 100 lines")
    pid = int(run.worker.split(":")[1])
    workers_before = children_of(server.process.pid)
    assert pid in workers_before, f"the run's owner {run.worker} is not a worker of gunicorn {workers_before}"

    os.kill(pid, signal.SIGKILL)
    started = time.monotonic()
    wait_for(lambda: Job.objects.get(pk=run.pk).status == JobStatus.LOST, "the run to be marked lost", LOST_WITHIN)
    noticed_after = time.monotonic() - started
    run.refresh_from_db()

    stored, reason = assert_lost_log(run)
    assert stored >= 100
    # gunicorn replaced the worker, and the server answers for the run.
    workers = wait_for(
        lambda: (found := children_of(server.process.pid)) and len(found) == len(workers_before) and found,
        "gunicorn to replace the killed worker",
    )
    assert pid not in workers
    status, body = get_log(server, run, session_cookie)
    assert status == 200 and body == "".join(text + "\n" for text in log_texts(run))
    print(f"\n{stored} lines kept; marked lost {noticed_after:.2f} s after the kill: {reason!r}")


# --- 2. PostgreSQL restarted under a running job -----------------------------------------------------


@dataclass
class Ticker:
    release: threading.Event = field(default_factory=threading.Event)
    printed: int = 0


_tickers: dict[str, Ticker] = {}


@job("fault_tests.ticker")
def ticker(key: str, interval: float = 0.005, after: int = 200) -> None:
    """Task #0, #1, ... every `interval` s until released, then `after` more, then Done.
    Counts what it printed (a print() that has returned is in the run's writer)."""
    state = _tickers[key]
    while True:
        released = state.release.is_set()
        print(f"Task #{state.printed}")
        state.printed += 1
        sleep(interval)
        if released:
            after -= 1
            if after <= 0:
                break
    print("Done")


def _pg(action: str) -> None:
    clusters = sorted(os.listdir("/etc/postgresql")) if Path("/etc/postgresql").is_dir() else []
    if not shutil.which("pg_ctlcluster") or not clusters:
        missing_tool("pg_ctlcluster and a cluster in /etc/postgresql are needed to restart PostgreSQL")
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", clusters[-1], "main", action],
        check=True, capture_output=True, timeout=WAIT,
    )  # fmt: skip


def _pg_ready() -> bool:
    settings = connection.settings_dict
    args = ["pg_isready", "-q", "-h", settings["HOST"] or "127.0.0.1", "-p", str(settings["PORT"] or 5432)]
    return subprocess.run(args, timeout=WAIT).returncode == 0


@contextmanager
def postgres_outage(action: str = "stop") -> Iterator[None]:
    """Stop (or restart) the server; it is running again and accepting connections when
    the block is left, whatever happened inside."""
    connection.close()  # this thread lets go first (its connection would be dead after)
    try:
        _pg(action)
        yield
    finally:
        if not _pg_ready():
            _pg("start")
        wait_for(_pg_ready, "PostgreSQL to accept connections again")
        connection.close()


@contextmanager
def ticking(caplog: pytest.LogCaptureFixture, **params: Any) -> Iterator[tuple[Job, Ticker]]:
    caplog.set_level(logging.WARNING)
    key = uuid.uuid4().hex
    state = _tickers[key] = Ticker()
    run = jobs.launch("fault_tests.ticker", key=key, **params)
    try:
        wait_for(lambda: Job.objects.get(pk=run.pk).line_count >= 50, "the run's first stored lines")
        yield run, state
    finally:
        state.release.set()
        _tickers.pop(key, None)


def messages(caplog: pytest.LogCaptureFixture, logger: str) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == logger]


@postgresql_only
@pytest.mark.stops_database
def test_postgresql_restart_under_a_running_job_loses_nothing(caplog: pytest.LogCaptureFixture) -> None:
    with ticking(caplog) as (run, state):
        with postgres_outage("restart"):
            printed_before = state.printed
        # The job printed on while the server was away (its lines wait in its writer).
        printed_during = state.printed - printed_before
        state.release.set()
        wait_finished(run)

    retries = [m for m in messages(caplog, "jobs.logstore.dbretry") if "could not store log lines" in m]
    print(
        f"\n{printed_during} lines printed while PostgreSQL restarted; {len(retries)} retries of the writer: "
        f"{retries[:1]}; {state.printed} Task lines in all"
    )
    assert run.status == JobStatus.SUCCEEDED, run.error
    assert retries, "the restart did not reach the writer (no retry logged)"
    assert printed_during > 0
    texts = log_texts(run)
    assert texts[-1] == "Done"
    assert counted(texts[:-1], state.printed), "a line is missing or repeated"
    assert_contiguous(run)
    assert run.line_count == state.printed + 1


def assert_failed_for_storage(run: Job, state: Ticker) -> None:
    """The run failed because its lines could not be stored; its log is the lines stored
    before the database went away, then a system line counting those that were not."""
    print(f"\nerror: {run.error!r}\nlast line: {log_texts(run)[-1]!r}")
    assert run.status == JobStatus.FAILED, run.status
    assert run.error.startswith("Log storage failed: OperationalError"), run.error
    assert_contiguous(run)
    rows = list(LogLine.objects.filter(job=run).order_by("number").values_list("stream", "text"))
    *printed, (stream, note) = rows
    stored = len(printed)
    assert counted([text for _, text in printed], stored)
    assert stream == LogStream.SYSTEM, rows[-2:]
    not_stored = state.printed - stored  # the job was stopped: no "Done"
    assert note.startswith(f"{not_stored:,} lines of this run could not be stored (OperationalError"), (
        note,
        f"{state.printed} printed, {stored} stored",
    )
    assert note.endswith("; the run was stopped.")


def assert_outage_fails_the_run(
    caplog: pytest.LogCaptureFixture, gives_up: str, what: str, timeout: float = WAIT
) -> None:
    """PostgreSQL stopped under a printing run until the logger `gives_up` reports giving up
    on it, then started at once: the run ends failed for storage within `timeout` s."""
    with ticking(caplog) as (run, state):
        with postgres_outage("stop"):
            wait_for(lambda: any(str(run.id) in m for m in messages(caplog, gives_up)), what)
        wait_finished(run, timeout=timeout)
    assert_failed_for_storage(run, state)


@postgresql_only
@pytest.mark.stops_database
def test_database_away_past_the_retry_limit_fails_the_run_clearly(
    caplog: pytest.LogCaptureFixture, settings: Any
) -> None:
    """PostgreSQL stopped until the writer gives up on the run, then started at once."""
    # The writer's backoff (0.05 s doubling, at most 2 s) gives up when the next pause would
    # pass the limit: with 4 s, after its attempt at about 3.2 s. The run's last line then
    # gets another 3.2 s of retries, which a starting PostgreSQL (about 1 s) fits in.
    settings.RUNLOG_DATABASE_RETRY_LIMIT = 4.0
    assert_outage_fails_the_run(caplog, "jobs.logstore.flusher", "the writer to give up")


@postgresql_only
@pytest.mark.stops_database
def test_database_away_past_every_retry_fails_the_run_once_it_is_back(
    caplog: pytest.LogCaptureFixture, settings: Any
) -> None:
    """PostgreSQL stopped until the run's worker has given up on recording its end too."""
    settings.RUNLOG_DATABASE_RETRY_LIMIT = 1.0
    assert_outage_fails_the_run(caplog, "jobs.running.runner", "the run's worker to give up", timeout=LOST_WITHIN)


#: How psycopg words a refused connection: two lines.
REFUSED = (
    'connection failed: connection to server at "127.0.0.1", port 5432 failed: Connection refused\n'
    "\tIs the server running on that host and accepting TCP/IP connections?"
)


def test_a_storage_failure_is_reported_on_one_line(
    caplog: pytest.LogCaptureFixture, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database refusing connections, as psycopg reports it, simulated on both databases:
    every store fails but the run's last one (the line that counts what was not stored)."""
    settings.RUNLOG_DATABASE_RETRY_LIMIT = 0.2
    real_store = storage.store

    def refusing_store(batches: list[Any], *args: Any, **kwargs: Any) -> None:
        if not any(batch.finished for batch in batches):
            raise OperationalError(REFUSED)
        real_store(batches, *args, **kwargs)

    with ticking(caplog) as (run, state):
        monkeypatch.setattr(storage, "store", refusing_store)
        wait_finished(run)
    monkeypatch.undo()
    assert_failed_for_storage(run, state)
    assert "\n" not in run.error, run.error
    assert "\n" not in log_texts(run)[-1]


# --- 3. 50 concurrent runs inside gunicorn ------------------------------------------------------------


@pytest.mark.slow
def test_50_concurrent_runs_in_gunicorn_keep_their_own_lines(
    subprocess_env: dict[str, str], tmp_path: Path, session_cookie: str
) -> None:
    server = start_gunicorn(
        subprocess_env, tmp_path / "gunicorn.log", "--workers", "2", "--access-logformat", ACCESS_LOG_FORMAT
    )
    try:
        # gunicorn listens once its first worker is up: wait for the second one too (a
        # precondition of spreading the runs), seen in the log: a threaded worker's pid is in
        # its access log, a uvicorn worker says when its application has started.
        def both_workers_answer() -> bool:
            request(f"{server.url}/admin/login/", timeout=WAIT)
            log = server.log()
            pids = re.findall(r'pid=<?(\d+)>? "GET /admin/login/', log)
            pids += re.findall(r"\[(\d+)\] \[INFO\] Application startup complete", log)
            return len(set(pids)) == 2

        wait_for(both_workers_answer, "both gunicorn workers to answer")
        url = launch_url(server.url, "demo.echo")
        token, cookies = csrf_of(url, session_cookie)
        texts = [f"run {index:02d} {uuid.uuid4().hex}" for index in range(50)]

        def launch(text: str) -> uuid.UUID:
            return post_launch_form(url, token, cookies, text=text, times=1000)

        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=25) as pool:
            ids = list(pool.map(launch, texts))
        runs = [Job.objects.get(pk=run_id) for run_id in ids]
        wait_finished(*runs)
        took = time.monotonic() - started

        for run, text in zip(runs, texts, strict=True):
            run.refresh_from_db()
            assert run.status == JobStatus.SUCCEEDED, (run, run.error)
            assert run.line_count == 1000
            assert log_texts(run) == [text] * 1000, f"{run}: lines of another run, or missing"
            assert_contiguous(run)
            status, body = get_log(server, run, session_cookie)
            assert status == 200
            assert body == f"{text}\n" * 1000
        per_worker = Counter(run.worker.split(":")[1] for run in runs)
        overlap = max(
            sum(1 for other in runs if other.started_at <= run.started_at < other.finished_at) for run in runs
        )
    finally:
        stop_server(server)
    print(f"\n50 runs x 1,000 lines in {took:.2f} s; runs per worker pid: {dict(per_worker)}; "
          f"at most {overlap} running at once")  # fmt: skip
    assert len(per_worker) == 2, f"the runs did not spread over both workers: {per_worker}"
    log = server.log()
    assert "Traceback (most recent call last)" not in log, log


# --- 4. 100 disconnects during a 5,000-line run ------------------------------------------------------

#: demo.count: Task #0 .. Task #4999, then Done, for at least 3 s (a sleep of 0.6 ms a
#: line). At full speed a run in the server prints them before the viewer's first
#: departures; at this pace a client on a loaded machine keeps up, so the departures meet
#: the run while it prints.
FLOOD = {"n": 5_000, "interval": 0.0006}
FLOOD_LINES = 5_001


@dataclass
class Connection:
    resume: str
    after: int  # the last line the client had
    running: bool | None = None  # the run's state in the connection's first status event
    stored_at_start: int | None = None
    lines: int = 0
    ending: str = ""


def watch_with_disconnects(
    base: str, run: Job, cookie: str, rng: random.Random, disconnects: int
) -> tuple[list[Connection], list[Line]]:
    """Read the run's events, leaving at `disconnects` seeded random line numbers spread
    over the whole log, each time resuming from the last line received (Last-Event-ID,
    ?offset= or both, the header winning over an offset of 0). A departure right after its
    line, or a few bytes further (mid-event: the partial event is dropped, as EventSource
    drops it), with a FIN or an RST. Every line must come exactly once, in order.

    (test_streaming's _watch_with_disconnects picks its points from each connection's
    stored line count: once a fast run has ended it reaches the last line within a dozen
    connections and stops at the 204, so it cannot make 100 departures here.)"""
    points = sorted(rng.sample(range(1, FLOOD_LINES), disconnects))
    received: list[Line] = []
    connections: list[Connection] = []
    for point in [*points, None]:
        last = received[-1][0] if received else 0
        resume = rng.choice(RESUME_MODES)
        connection = Connection(resume, last)
        connections.append(connection)
        with resume_events(base, run, cookie, resume, last) as stream:
            if stream.status == 204:
                assert point is None, f"204 after line {last}, with a departure at {point} to come"
                connection.ending = "204"
                break
            assert stream.status == 200, stream.read_all()[:500]
            parser = SseParser()
            extra_bytes = rng.randint(1, 200) if rng.random() < 0.5 else 0
            departs_mid_stream = bool(extra_bytes)
            leaving = done = False
            for piece in stream.pieces():
                data = piece.data
                if leaving:  # a few bytes past the departure line, then gone
                    data, extra_bytes = data[:extra_bytes], extra_bytes - len(data)
                for event in parser.feed(data):
                    if event.event == "status" and connection.running is None:
                        connection.running = not event.json["finished"]
                        connection.stored_at_start = event.json["line_count"]
                    elif event.event == "message" and not leaving:
                        line = line_of(event)
                        expected = (received[-1][0] if received else 0) + 1
                        assert line[0] == expected, f"line {line[0]} where {expected} was due: {connection}"
                        received.append(line)
                        connection.lines += 1
                        if point is not None and line[0] >= point:
                            leaving = True
                            if not extra_bytes:
                                break  # the rest of this piece is never looked at
                    elif event.event == "done":
                        done = True
                if done or (leaving and extra_bytes <= 0):
                    break
            if point is None:
                assert done, f"the last connection ended without done: {connection}"
                assert stream.at_eof(), "the server kept the connection open after done"
                connection.ending = "done"
                break
            assert leaving, f"the stream ended before line {point}: {connection}"
            if not departs_mid_stream:
                connection.ending = "left"
            else:
                connection.ending = "left mid-event" if parser.partial else "left between events"
            stream.close(reset=rng.random() < 0.5)
    return connections, received


def _watch_flood(base: str, run: Job, cookie: str, seed: str) -> None:
    connections, received = watch_with_disconnects(base, run, cookie, random.Random(seed), disconnects=100)
    run = wait_finished(run)
    stored = stored_lines(run)
    departures = [c for c in connections if c.ending.startswith("left")]
    during = [c for c in departures if c.running]
    print(
        f"\n{base}: {len(connections)} connections, {len(departures)} departures "
        f"({sum(c.ending == 'left mid-event' for c in departures)} mid-event), {len(during)} of them while "
        f"the run was printing; run took {(run.finished_at - run.started_at).total_seconds():.2f} s; "
        f"{len(received)} lines received; resumes: {dict(Counter(c.resume for c in connections))}"
    )
    assert run.status == JobStatus.SUCCEEDED, run.error
    assert len(departures) == 100
    assert len(during) >= 10, "the run had ended before the departures: not a test of a live tail"
    assert len(stored) == FLOOD_LINES and stored[-1][3] == "Done"
    assert received == stored, "the concatenation of the connections is not the stored log"
    with open_events(base, run, cookie, last_event_id=run.line_count) as stream:
        assert stream.status == 204


@pytest.mark.slow
def test_100_disconnects_during_a_flood_straight_to_gunicorn(
    live_server_gunicorn: LiveServer, session_cookie: str
) -> None:
    """The run inside the server: connections to its worker follow it through the hub, those
    to the other worker through the poller."""
    server = live_server_gunicorn
    run = launch_in_server(server.url, session_cookie, "demo.count", **FLOOD)
    _watch_flood(server.url, run, session_cookie, "faults-gunicorn")


@pytest.mark.slow
@pytest.mark.parametrize("other_server", ["nginx"], indirect=True)
def test_100_disconnects_during_a_flood_through_nginx(
    other_server: tuple[str, Callable[[], str]],
    session_cookie: str,
    local_runs: LocalRuns,
) -> None:
    """nginx with its defaults (proxy_buffering on) in front of gunicorn; the run is one of
    this test process, followed by the server's poller."""
    base, _ = other_server
    run = local_runs.launch("demo.count", **FLOOD)
    _watch_flood(base, run, session_cookie, "faults-nginx")
