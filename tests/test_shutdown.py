"""Graceful shutdown: when gunicorn is stopped with SIGTERM while jobs run, the lines they
wrote are stored and each run ends with a truthful status and a system line saying why."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from jobs import checkpoint, job
from jobs.launcher import create_run
from jobs.logstore.hub import LiveHub
from jobs.models import Job, JobStatus, LogLine, LogStream
from jobs.running.runner import Runner
from tests.conftest import WAIT, assert_contiguous, launch_in_server, log_texts, start_gunicorn, stop_server, wait_for
from tests.sse_client import HttpStream, sse_events

pytestmark = pytest.mark.django_db(transaction=True)

#: Set by the test to let the stuck job below return.
release_stuck_job = threading.Event()


@job("tests.shutdown.stuck")
def stuck() -> None:
    """Prints, then blocks where no cancel reaches it (as a job stuck in a C call would)."""
    print("about to block")
    release_stuck_job.wait(WAIT)
    print("released")


@job("tests.shutdown.steady")
def steady() -> None:
    for index in range(100_000):
        print(f"step {index}")
        checkpoint()
        time.sleep(0.02)


def test_sigterm_ends_the_runs_of_gunicorn_truthfully_and_ends_their_streams(
    subprocess_env: dict[str, str], session_cookie: str, tmp_path: Path
) -> None:
    server = start_gunicorn(subprocess_env, tmp_path / "gunicorn.log", "--workers", "1")
    try:
        running = launch_in_server(server.url, session_cookie, "demo.count", n="100000", interval="0.02")
        wait_for(lambda: Job.objects.get(pk=running.pk).line_count >= 5, "the run to print")
        viewer = HttpStream(f"{server.url}/jobs/{running.id}/events", headers={"Cookie": session_cookie}, timeout=WAIT)
        events = sse_events(viewer)
        next(event for event in events if event.event == "status")  # the viewer follows the run
        os.kill(server.process.pid, signal.SIGTERM)
        # The viewer's stream ends (it would resume elsewhere) and the server exits well
        # before gunicorn's graceful timeout would have killed it.
        assert [event.event for event in events][-1] == "done"  # it saw the run end first
        assert server.process.wait(WAIT) == 0
    finally:
        stop_server(server)
    running.refresh_from_db()
    assert running.status == JobStatus.FAILED
    assert running.error == "Interrupted: the server running it shut down."
    assert_contiguous(running)
    texts = log_texts(running)
    assert texts[-1] == "Interrupted: the server running it shut down."
    assert LogLine.objects.get(job=running, number=running.line_count).stream == LogStream.SYSTEM
    assert texts[:-1] == [f"Task #{index}" for index in range(len(texts) - 1)]
    assert "Traceback" not in server.log()


@pytest.fixture
def own_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    """A runner's shutdown ends every stream of its process; these tests' runners are not
    the process's, so they get a hub of their own."""
    monkeypatch.setattr("jobs.running.runner.hub", LiveHub())


@pytest.mark.usefixtures("own_hub")
def test_a_run_that_does_not_stop_in_time_is_ended_with_its_lines_stored() -> None:
    runner = Runner()
    runner.start()
    stuck_run = create_run("tests.shutdown.stuck", {})
    steady_run = create_run("tests.shutdown.steady", {})
    never_started = create_run("demo.count", {})
    Job.objects.filter(pk=never_started.pk).update(worker=runner.identity)
    threads = [threading.Thread(target=runner.run, args=(run,)) for run in (stuck_run, steady_run)]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: log_texts(stuck_run) == ["about to block"], "the stuck job to print")
        wait_for(lambda: Job.objects.get(pk=steady_run.pk).line_count >= 3, "the steady job to print")
        runner.shut_down(grace=0.5)
    finally:
        release_stuck_job.set()
        for thread in threads:
            thread.join(WAIT)
        runner.stop()

    stuck_run.refresh_from_db()
    assert stuck_run.status == JobStatus.FAILED
    message = "Interrupted: the server shut down, and the job did not stop within 0.5 s."
    assert stuck_run.error == message
    # "released" came after the run was ended: it is not part of the log.
    assert log_texts(stuck_run) == ["about to block", message]
    assert_contiguous(stuck_run)

    steady_run.refresh_from_db()
    assert steady_run.status == JobStatus.FAILED
    assert log_texts(steady_run)[-1] == "Interrupted: the server running it shut down."
    assert_contiguous(steady_run)

    never_started.refresh_from_db()
    assert never_started.status == JobStatus.FAILED
    assert log_texts(never_started) == ["Not started: the server shut down before the run began."]


@pytest.mark.usefixtures("own_hub")
def test_a_runner_that_shut_down_starts_no_more_runs() -> None:
    runner = Runner()
    runner.shut_down(grace=0)
    run = create_run("demo.count", {"n": 1, "interval": 0})
    assert runner.run(run).status == JobStatus.QUEUED
    runner.stop()
