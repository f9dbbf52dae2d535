"""Live lines pushed across processes on PostgreSQL: the flusher's transaction announces
each stored batch (NOTIFY), and each web process's listener wakes its poller at once.

The servers are real gunicorn processes, the runs real `manage.py runjob` children (a
worker's stand-in). That a line came by NOTIFY is shown by giving the server a poll
interval of an hour: only an announcement can bring it within the test's time. That an
idle viewer costs no query is counted on the server's own database sessions, which the
test tells from others by their application_name.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import pytest
from django.db import connection, transaction
from django.utils import timezone

from jobs.logstore import storage
from jobs.logstore.notify import CHANNEL, Announcement, announce
from jobs.logstore.writer import Batch
from jobs.models import Job
from tests.conftest import (
    PERMALINK,
    PROJECT_DIR,
    WAIT,
    LiveServer,
    open_events,
    running_run,
    start_gunicorn,
    stop_server,
    store_lines,
    stored_lines,
    wait_for,
)
from tests.sse_client import HttpStream, Line, SseEvent, line_of, sse_events

pytestmark = pytest.mark.django_db(transaction=True)

postgresql_only = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="LISTEN/NOTIFY is PostgreSQL's (on SQLite, viewers poll)"
)

#: A poll interval no test waits for: what arrives came by NOTIFY.
NEVER = "3600"


# --- Announcements --------------------------------------------------------------------------------


@contextmanager
def listening() -> Iterator[object]:
    """A connection of the test's own in LISTEN on Runlog's channel."""
    import psycopg

    params = {**connection.get_connection_params(), "autocommit": True}
    with psycopg.connect(**params) as listener:
        listener.execute(f'LISTEN "{CHANNEL}"')
        yield listener


def heard(listener: object, count: int) -> list[Announcement | None]:
    return [Announcement.parse(n.payload) for n in listener.notifies(timeout=WAIT, stop_after=count)]  # type: ignore[attr-defined]


@postgresql_only
def test_a_stored_batch_is_announced_with_its_line_count_at_commit() -> None:
    job, ending = running_run(), running_run()
    now = timezone.now()
    batches = [
        Batch(job_id=job.id, first_number=1, segments=[("stdout", ["a", "b", "c"])], created_at=now, line_count=3),
        Batch(job_id=ending.id, first_number=1, segments=[("stdout", ["z"])], created_at=now, line_count=1,
              finished=True),
    ]  # fmt: skip
    with listening() as listener:
        with transaction.atomic():
            storage.store(batches)
            # Inside the transaction: delivered only once it commits.
            assert list(listener.notifies(timeout=0.2)) == []  # type: ignore[attr-defined]
        assert sorted(heard(listener, 2), key=str) == sorted(
            [Announcement(job.id, 3), Announcement(ending.id, 1, output_ended=True)], key=str
        )
        announce(job.id, 3)  # what the runner calls when a run's row changes
        assert heard(listener, 1) == [Announcement(job.id, 3)]


def test_only_announcements_parse() -> None:
    job_id = uuid.uuid4()
    for announcement in (Announcement(job_id, 0), Announcement(job_id, 12, output_ended=True)):
        assert Announcement.parse(announcement.payload()) == announcement
    for payload in ("", "x 1", f"{job_id}", f"{job_id} x", f"{job_id} 1 done", f"{job_id} 1 ended x"):
        assert Announcement.parse(payload) is None, payload


# --- A viewer in gunicorn, a run in another process --------------------------------------------------


@contextmanager
def runjob(env: dict[str, str], tmp_path: Path, *args: str) -> Iterator[tuple[subprocess.Popen[str], Job]]:
    """`manage.py runjob ARGS` in a child process, and its run once it has printed the
    permalink. Its echo is drained, so that its pipe never fills."""
    errors = tmp_path / "runjob.err"
    with errors.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "runjob", *args],
            cwd=PROJECT_DIR, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True,
        )  # fmt: skip
    try:
        assert process.stdout is not None
        match = PERMALINK.fullmatch(process.stdout.readline().strip())
        assert match, f"runjob printed no permalink: {errors.read_text()}"
        threading.Thread(target=process.stdout.read, daemon=True).start()
        yield process, Job.objects.get(pk=uuid.UUID(match["id"]))
        assert process.wait(WAIT) == 0, errors.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def read_to_the_last_line(events: Iterator[SseEvent], last_text: str) -> list[Line]:
    """The lines of an events stream, up to the one whose text is `last_text`."""
    lines: list[Line] = []
    for event in events:
        if event.event == "message":
            lines.append(line_of(event))
            if lines[-1][3] == last_text:
                return lines
    pytest.fail(f"the stream ended before {last_text!r}: {lines[-3:]}")


def first_status(events: Iterator[SseEvent]) -> dict[str, object]:
    assert next(events).retry is not None
    status = next(events)
    assert status.event == "status", status
    return status.json


@postgresql_only
def test_a_viewer_gets_the_lines_of_another_process_by_notify(
    subprocess_env: dict[str, str], tmp_path: Path, session_cookie: str
) -> None:
    server = start_gunicorn({**subprocess_env, "RUNLOG_POLL_INTERVAL": NEVER}, tmp_path / "gunicorn.log")
    try:
        # Eight seconds: a viewer slow to connect on a loaded machine still sees most of it live.
        with runjob(subprocess_env, tmp_path, "demo.count", "n=80", "interval=0.1") as (process, job):
            with open_events(server, job, session_cookie) as stream:
                events = sse_events(stream)
                stored_at_start = first_status(events)["line_count"]
                lines = read_to_the_last_line(events, "Done")
                still_running = process.poll() is None
    finally:
        stop_server(server)
    assert lines == stored_lines(job), "a line is missing, repeated or out of order"
    assert still_running, "the last line came only once runjob had exited"
    # What the run had stored when the viewer came was read from the database; the rest
    # was pushed (the server's poller would only have read it an hour later).
    assert isinstance(stored_at_start, int) and stored_at_start <= len(lines) - 10, stored_at_start
    print(f"{len(lines) - stored_at_start} of {len(lines)} lines pushed")


def server_sessions(name: str) -> list[tuple[int, datetime, datetime, str, str]]:
    """(pid, backend_start, query_start, state, query) of the database sessions of the
    server whose application_name is `name`."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid, backend_start, query_start, state, query FROM pg_stat_activity WHERE application_name = %s",
            [name],
        )
        return cursor.fetchall()


def marked_server(env: dict[str, str], tmp_path: Path, name: str, **settings: str) -> LiveServer:
    """gunicorn whose database sessions carry the application_name `name`."""
    url = f"{env['DATABASE_URL']}?application_name={name}"
    return start_gunicorn({**env, "DATABASE_URL": url, **settings}, tmp_path / "gunicorn.log")


def listeners(name: str) -> set[int]:
    return {pid for pid, _, _, _, query in server_sessions(name) if query == f'LISTEN "{CHANNEL}"'}


@postgresql_only
def test_the_listener_reconnects_and_no_line_is_lost_or_repeated(
    subprocess_env: dict[str, str], tmp_path: Path, session_cookie: str
) -> None:
    name = f"runlog-notify-{uuid.uuid4().hex[:8]}"
    server = marked_server(subprocess_env, tmp_path, name, RUNLOG_POLL_INTERVAL=NEVER)
    try:
        with runjob(subprocess_env, tmp_path, "demo.count", "n=300", "interval=0.01") as (_, job):
            with open_events(server, job, session_cookie) as stream:
                events = sse_events(stream)
                first_status(events)
                lines = read_to_the_last_line(events, "Task #20")
                (killed,) = wait_for(lambda: listeners(name), "the server to listen")
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_terminate_backend(%s)", [killed])
                killed_at = timezone.now()
                lines += read_to_the_last_line(events, "Done")
                after = listeners(name)
    finally:
        stop_server(server)
    assert lines == stored_lines(job), "a line is missing, repeated or out of order"
    assert after and killed not in after, f"no new listener: {after}"
    assert "Runlog listener lost its connection" in server.log()
    later = [line for line in lines if datetime.fromisoformat(line[2]) > killed_at]
    assert len(later) > 100, "the run had ended before the listener was cut off: not a test of the reconnect"
    print(f"listener {killed} terminated; {len(later)} lines stored after that, all delivered once")


# --- An idle viewer costs no query --------------------------------------------------------------------

#: Seconds during which the server's queries are counted.
IDLE_WINDOW = 3.0
#: Seconds without a query after which a server has done the reads of a new viewer (they
#: take milliseconds).
SETTLED = 0.5


def queries_during(name: str, seconds: float) -> int:
    """Queries started by the server's sessions over the next `seconds`: each new value of
    a session's query_start, and each new session, as seen by sampling pg_stat_activity
    every 20 ms (the poller's reads are POLL_INTERVAL apart: each is seen)."""
    known = {(pid, started, query_start) for pid, started, query_start, _, _ in server_sessions(name)}
    seen: set[tuple[int, datetime, datetime]] = set()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        seen |= {(pid, started, query_start) for pid, started, query_start, _, _ in server_sessions(name)}
        time.sleep(0.02)
    return len(seen - known)


def settle(name: str) -> None:
    """Wait until the server listens and has started no query for SETTLED seconds: it has
    done the reads of a new viewer (its poller's first read of the run, and the read of
    every watched run once the listener listens), and the viewer its own."""
    last: set[tuple[int, datetime, datetime, str]] = set()
    since = deadline = time.monotonic()
    deadline += WAIT
    while True:
        sessions = {(pid, started, query_start, state) for pid, started, query_start, state, _ in server_sessions(name)}
        if sessions != last:
            last, since = sessions, time.monotonic()
        elif listeners(name) and time.monotonic() - since >= SETTLED:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"the server's sessions did not settle: {server_sessions(name)}")
        time.sleep(0.02)


@postgresql_only
@pytest.mark.parametrize("notify", [True, False], ids=["notify", "poll"])
def test_an_idle_viewer_costs_no_query(
    subprocess_env: dict[str, str], tmp_path: Path, session_cookie: str, notify: bool
) -> None:
    """With NOTIFY, a viewer of a running run that prints nothing costs the database no
    query; the same count with polling (the control) sees the poller's reads."""
    name = f"runlog-idle-{uuid.uuid4().hex[:8]}"
    # The server's supervisor stays quiet: it would heartbeat every 0.5 s in the tests.
    settings = {"RUNLOG_HEARTBEAT_INTERVAL": NEVER, "RUNLOG_NOTIFY": "1" if notify else "0"}
    if notify:
        settings["RUNLOG_POLL_INTERVAL"] = NEVER
    server = marked_server(subprocess_env, tmp_path, name, **settings)
    job = running_run()  # run by no process: nothing else touches it
    try:
        with HttpStream(
            f"{server.url}/jobs/{job.id}/events", headers={"Cookie": session_cookie}, timeout=WAIT
        ) as stream:
            events = sse_events(stream)
            first_status(events)
            if notify:
                settle(name)
            # One line, announced as a flusher does: once it is here, the server has read
            # all it will read until the run changes again.
            store_lines(job, 1, 1)
            assert read_to_the_last_line(events, "line 1") == stored_lines(job)
            queries = queries_during(name, IDLE_WINDOW)
    finally:
        stop_server(server)
    print(f"{'notify' if notify else 'poll'}: {queries} queries in {IDLE_WINDOW:g} s of an idle viewer")
    if notify:
        assert queries == 0
    else:
        assert queries > 0, "the count missed the poller's reads"
