"""The database dropping its connections: a run goes on with nothing lost, and viewers are
served on fresh connections."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

import jobs
from jobs import job
from jobs.models import JobStatus
from tests.conftest import (
    WAIT,
    LiveServer,
    assert_contiguous,
    get_log,
    log_texts,
    run_now,
    wait_finished,
    wait_for,
)

postgresql_only = pytest.mark.skipif(connection.vendor != "postgresql", reason="uses pg_terminate_backend")

_halfway = threading.Event()
_go_on = threading.Event()


@job("db_fault_tests.two_halves")
def two_halves(lines: int = 500) -> None:
    for index in range(lines):
        print(f"first half {index}")
    _halfway.set()
    _go_on.wait(WAIT)
    for index in range(lines):
        print(f"second half {index}")


@job("db_fault_tests.numbered")
def numbered(lines: int = 100) -> None:
    for index in range(lines):
        print(f"line {index}")


def _terminate_other_backends() -> int:
    """Drop every other connection to the test database, as a restart or a proxy would."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return cursor.fetchone()[0]


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_lines_survive_the_database_dropping_the_writers_connection() -> None:
    _halfway.clear()
    _go_on.clear()
    run = jobs.launch("db_fault_tests.two_halves", lines=500)
    try:
        assert _halfway.wait(WAIT)
        # Every first-half line is stored before the connections go, so that the second
        # half's first batch is the one that meets the dead connection.
        wait_for(lambda: len(log_texts(run)) == 500, "the first half to be stored")
        assert _terminate_other_backends() >= 1
    finally:
        _go_on.set()
    wait_finished(run)

    assert run.status == JobStatus.SUCCEEDED, run.error
    assert log_texts(run) == [f"first half {i}" for i in range(500)] + [f"second half {i}" for i in range(500)]
    assert_contiguous(run)


@postgresql_only
def test_viewers_are_served_after_the_database_dropped_the_servers_connections(
    live_server_gunicorn: LiveServer, session_cookie: str
) -> None:
    run = run_now("db_fault_tests.numbered", lines=100)
    expected = "".join(f"line {index}\n" for index in range(100))
    # The server's viewer readers keep their connections between reads.
    for _ in range(4):
        assert get_log(live_server_gunicorn, run, session_cookie) == (200, expected)

    assert _terminate_other_backends() >= 1

    for _ in range(8):
        assert get_log(live_server_gunicorn, run, session_cookie) == (200, expected)
