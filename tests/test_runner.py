"""The runner: how a run ends (success, failure, exit, cancel, timeout, lost) and what it
leaves in the database for the people who look at it afterwards."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db import connection, connections
from django.test import override_settings
from django.utils import timezone

import jobs
from jobs import JobCancelled, checkpoint, job, progress, run_command, sleep
from jobs.conf import runlog_settings
from jobs.launcher import cancel_run, create_run
from jobs.models import Job, JobStatus, LogLine, LogStream
from jobs.running.runner import get_runner, start
from jobs.running.supervisor import Supervisor, mark_stale_runs_lost, process_identity, recover_runs_of_dead_processes
from tests.conftest import WAIT, assert_contiguous, enqueue, log_texts, run_now, wait_finished, wait_for

#: Generous: a deadline only bounds how long a broken build hangs, it never decides a pass.
CANCELLED_NOTE = "Cancelled on request."

# Events and counters the test-only jobs share with the tests, by a key each test makes.
_gates: dict[str, threading.Event] = {}
_runs: dict[str, int] = {}
_runs_lock = threading.Lock()
_connections: dict[str, list[Any]] = {}


def wait_for_line(job: Job, text: str) -> None:
    wait_for(lambda: LogLine.objects.filter(job=job, text=text).exists(), f"the line {text!r} of {job.name}")


def system_lines(job: Job) -> list[str]:
    return log_texts(job, LogStream.SYSTEM)


@pytest.fixture
def gate() -> Iterator[tuple[str, threading.Event]]:
    """A key a job can wait on, and the event that releases it."""
    key = uuid.uuid4().hex
    event = _gates[key] = threading.Event()
    yield key, event
    event.set()  # never leave a job of this test waiting for ever


def _process_alive(pid: int) -> bool:
    """Alive and not a zombie (this container's init may be slow to reap orphans)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


# --- Test-only jobs --------------------------------------------------------------------------


@job("runner_tests.hello")
def hello() -> None:
    print("hello")
    print("world")


@job("runner_tests.raise")
def raise_error(message: str = "boom") -> None:
    print("before the error")
    _fail_deeper(message)


def _fail_deeper(message: str) -> None:
    raise RuntimeError(message)


@job("runner_tests.exit")
def exit_with(code: int | None = None) -> None:
    print("exiting")
    sys.exit(code)


@job("runner_tests.sleep")
def long_sleep(seconds: float = 600) -> None:
    print("sleeping")
    sleep(seconds)
    print("woke up")


@job("runner_tests.busy")
def busy(limit: float = 60) -> None:
    # Pure computation with a print now and then: no sleep(), no checkpoint().
    safety_net = time.monotonic() + limit  # a broken cancel must not spin for ever
    while time.monotonic() < safety_net:
        total = sum(range(20_000))
        print(f"computed {total}")
    print("loop ended")


@job("runner_tests.checkpoint")
def checkpoints(limit: float = 60) -> None:
    print("started")
    safety_net = time.monotonic() + limit
    try:
        while time.monotonic() < safety_net:
            checkpoint()  # the only place where this loop can be stopped
            time.sleep(0.005)
    except JobCancelled:
        print("stopped at a checkpoint")
        raise
    print("loop ended")


# The child prints its pid and its own child's pid, then waits for ever: only a kill ends it.
_CHILD = """
import os, signal, subprocess, sys, time
if sys.argv[1] == "ignore-term":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
print(f"pids {os.getpid()} {grandchild.pid}", flush=True)
time.sleep(600)
"""


@job("runner_tests.child")
def child(on_term: str = "die") -> None:
    run_command([sys.executable, "-c", _CHILD, on_term])
    print("after the child")


@job("runner_tests.cleanup")
def cleanup() -> None:
    try:
        try:
            print("working")
            sleep(600)
        except Exception:  # a job's own broad handler must not swallow the cancel
            print("swallowed")
    finally:
        print("cleaning up")
        print("cleaned up")


@job("runner_tests.timeout", timeout=0.5)
def too_slow() -> None:
    print("starting")
    sleep(600)
    print("finished")


@job("runner_tests.stubborn", timeout=0.2)
def stubborn() -> None:
    # Blocks where the timeout cannot interrupt it, then returns without printing.
    time.sleep(1.0)


@job("runner_tests.partial")
def partial_line(gate: str = "", then: str = "sleep") -> None:
    sys.stdout.write("unfinished line")
    if then == "raise":
        raise RuntimeError("boom")
    _gates[gate].set()  # tell the test the text is written: cancelling now cannot pre-empt it
    sleep(600)


@job("runner_tests.gated")
def gated(gate: str) -> None:
    print("waiting")
    event = _gates[gate]
    while not event.is_set():
        sleep(0.02)
    print("released")


@job("runner_tests.count_runs")
def count_runs(gate: str) -> None:
    with _runs_lock:
        _runs[gate] = _runs.get(gate, 0) + 1
    print("running")
    event = _gates[gate]
    while not event.is_set():
        sleep(0.02)


@job("runner_tests.many_lines")
def many_lines(lines: int = 20_000, then: str = "return") -> None:
    for index in range(lines):
        print(f"line {index + 1}")
    if then == "raise":
        raise RuntimeError("after many lines")


@job("runner_tests.progress")
def report_progress(gate: str) -> None:
    progress(1, 4, "first step")
    event = _gates[gate]
    while not event.is_set():
        sleep(0.02)
    for step in range(2, 5):
        progress(step, 4, f"step {step} of 4")


@job("runner_tests.connection")
def use_connection(key: str) -> None:
    # The connection this worker thread uses; the runner must close it after the run.
    _connections.setdefault(key, []).append(connections["default"])
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            print(f"backend {cursor.fetchone()[0]}")
    else:
        Job.objects.exists()


# --- Success and failure ---------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_success_records_status_timestamps_and_lines() -> None:
    job = run_now("runner_tests.hello")

    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED
    assert job.error == ""
    assert job.started_at is not None and job.finished_at is not None
    assert job.created_at <= job.started_at <= job.finished_at
    assert job.line_count == 2
    assert log_texts(job, LogStream.STDOUT) == ["hello", "world"]
    assert_contiguous(job)


@pytest.mark.django_db(transaction=True)
def test_launched_job_runs_in_a_worker_thread() -> None:
    job = jobs.launch("runner_tests.hello")
    assert job.status == JobStatus.QUEUED  # launch() returns the queued run
    assert job.worker == get_runner().identity

    wait_finished(job)
    assert job.status == JobStatus.SUCCEEDED
    assert job.started_at is not None and job.finished_at is not None
    assert log_texts(job) == ["hello", "world"]


@pytest.mark.django_db(transaction=True)
def test_exception_stores_the_traceback_and_a_one_line_error() -> None:
    job = run_now("runner_tests.raise", message="boom")

    job.refresh_from_db()
    assert job.status == JobStatus.FAILED
    assert job.error == "RuntimeError: boom"
    assert log_texts(job, LogStream.STDOUT) == ["before the error"]
    stderr = log_texts(job, LogStream.STDERR)
    assert stderr[0] == "Traceback (most recent call last):"
    assert stderr[-1] == "RuntimeError: boom"
    # The traceback starts at the job's code: both of its frames are there, Runlog's are not.
    assert any("in raise_error" in line for line in stderr)
    assert any("in _fail_deeper" in line for line in stderr)
    assert not any("jobs/running/execution.py" in line for line in stderr)
    assert_contiguous(job)


@pytest.mark.django_db(transaction=True)
def test_multi_line_exception_message_gives_a_one_line_error() -> None:
    job = run_now("runner_tests.raise", message="first line\nsecond line")

    assert job.status == JobStatus.FAILED
    assert job.error == "RuntimeError: first line"
    # The log keeps the whole message.
    assert log_texts(job, LogStream.STDERR)[-2:] == ["RuntimeError: first line", "second line"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("code", [None, 0])
def test_sys_exit_without_error_code_is_success(code: int | None) -> None:
    job = run_now("runner_tests.exit", **({} if code is None else {"code": code}))

    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED
    assert job.error == ""
    assert log_texts(job) == ["exiting"]


@pytest.mark.django_db(transaction=True)
def test_sys_exit_with_error_code_fails_with_a_system_line() -> None:
    job = run_now("runner_tests.exit", code=3)

    job.refresh_from_db()
    assert job.status == JobStatus.FAILED
    assert job.error == "The job exited with status 3."
    assert log_texts(job) == ["exiting", "The job exited with status 3."]
    assert system_lines(job) == ["The job exited with status 3."]
    assert log_texts(job, LogStream.STDERR) == []  # an exit is not a crash: no traceback


# --- Cancel ------------------------------------------------------------------------------------


def _assert_cancelled(job: Job) -> None:
    assert job.status == JobStatus.CANCELLED
    assert job.finished_at is not None
    assert log_texts(job)[-1] == CANCELLED_NOTE
    assert system_lines(job)[-1] == CANCELLED_NOTE
    assert_contiguous(job)


def _cancel_here(job: Job) -> None:
    """Cancel a run of this process through its runner, and check how it ended."""
    assert cancel_run(job.id) is True
    wait_finished(job)
    _assert_cancelled(job)


@pytest.mark.django_db(transaction=True)
def test_cancel_in_process_interrupts_jobs_sleep() -> None:
    job = jobs.launch("runner_tests.sleep")
    wait_for(lambda: Job.objects.filter(pk=job.pk, status=JobStatus.RUNNING).exists(), "the run to start")
    wait_for_line(job, "sleeping")

    _cancel_here(job)
    assert log_texts(job) == ["sleeping", CANCELLED_NOTE]
    assert job.error == ""
    # A finished run is not this process's to cancel any more.
    assert cancel_run(job.id) is False


@pytest.mark.django_db(transaction=True)
def test_cancel_requested_in_the_database_reaches_the_run() -> None:
    # What another process (a web request served elsewhere) does: set the flag only.
    job = jobs.launch("runner_tests.sleep")
    wait_for_line(job, "sleeping")

    Job.objects.filter(pk=job.pk).update(cancel_requested=True)
    wait_finished(job)

    _assert_cancelled(job)
    assert "woke up" not in log_texts(job)


@pytest.mark.django_db(transaction=True)
def test_cancel_stops_a_busy_loop_at_its_next_print() -> None:
    job = jobs.launch("runner_tests.busy")
    wait_for(lambda: LogLine.objects.filter(job=job).exists(), "the busy loop's first line")

    _cancel_here(job)
    assert "loop ended" not in log_texts(job)


@pytest.mark.django_db(transaction=True)
def test_cancel_stops_a_job_at_its_next_checkpoint() -> None:
    job = jobs.launch("runner_tests.checkpoint")
    wait_for_line(job, "started")

    _cancel_here(job)
    # JobCancelled came out of checkpoint(), and the job could still print once it had.
    assert log_texts(job) == ["started", "stopped at a checkpoint", CANCELLED_NOTE]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("on_term", ["die", "ignore-term"])
def test_cancel_kills_run_command_children(on_term: str) -> None:
    # "ignore-term": the child survives SIGTERM, so it takes the SIGKILL after the grace period.
    job = jobs.launch("runner_tests.child", on_term=on_term)
    line = wait_for(
        lambda: LogLine.objects.filter(job=job, text__startswith="pids ").values_list("text", flat=True).first(),
        "the child's pids",
    )
    child_pid, grandchild_pid = (int(pid) for pid in line.split()[1:])
    assert _process_alive(child_pid) and _process_alive(grandchild_pid)

    _cancel_here(job)
    assert "after the child" not in log_texts(job)
    assert not _process_alive(child_pid)  # run_command has reaped it before the run ended
    # The whole process group goes: the child's own child too.
    wait_for(lambda: not _process_alive(grandchild_pid), "the grandchild to be killed")


@pytest.mark.django_db(transaction=True)
def test_finally_blocks_can_print_after_a_cancel() -> None:
    job = jobs.launch("runner_tests.cleanup")
    wait_for_line(job, "working")

    _cancel_here(job)
    # JobCancelled is a BaseException (no "swallowed"), raised once: the cleanup's prints work.
    assert log_texts(job) == ["working", "cleaning up", "cleaned up", CANCELLED_NOTE]


@pytest.mark.django_db(transaction=True)
def test_unfinished_line_written_before_a_cancel_comes_before_the_cancel_note(
    gate: tuple[str, threading.Event],
) -> None:
    key, written = gate
    job = jobs.launch("runner_tests.partial", gate=key)
    assert written.wait(WAIT), "the job did not start"

    assert cancel_run(job.id) is True
    wait_finished(job)

    assert job.status == JobStatus.CANCELLED
    assert log_texts(job) == ["unfinished line", CANCELLED_NOTE]


@pytest.mark.django_db(transaction=True)
def test_unfinished_line_written_before_an_exception_comes_before_the_traceback() -> None:
    job = run_now("runner_tests.partial", then="raise")

    assert job.status == JobStatus.FAILED
    texts = log_texts(job)
    assert texts[0] == "unfinished line"
    assert texts[-1] == "RuntimeError: boom"


# --- Timeout -----------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_timeout_fails_the_run_with_a_system_line() -> None:
    job = run_now("runner_tests.timeout")

    job.refresh_from_db()
    assert job.status == JobStatus.FAILED
    assert job.error == "Timed out after 0.5 s."
    assert log_texts(job) == ["starting", "Timed out after 0.5 s."]
    assert system_lines(job) == ["Timed out after 0.5 s."]
    assert job.timeout == 0.5
    assert_contiguous(job)


@pytest.mark.django_db(transaction=True)
def test_run_that_outlived_its_timeout_is_not_a_success() -> None:
    job = run_now("runner_tests.stubborn")

    assert job.status == JobStatus.FAILED
    assert job.error == "Timed out after 0.2 s."


@pytest.mark.django_db(transaction=True)
def test_supervisor_does_not_spin_while_a_timed_out_run_winds_down(monkeypatch: pytest.MonkeyPatch) -> None:
    supervisor = start().supervisor
    iterations = 0
    fire_timeouts = supervisor._fire_timeouts

    def counting(now: float) -> None:
        nonlocal iterations
        iterations += 1
        fire_timeouts(now)

    monkeypatch.setattr(supervisor, "_fire_timeouts", counting)
    run_now("runner_tests.stubborn")  # ~0.8 s past its deadline

    # An idle-waiting loop wakes for heartbeats and cancel polls: a few dozen times at most
    # in that second. A spinning one goes round hundreds of thousands of times.
    assert iterations < 1000


# --- Lost runs -----------------------------------------------------------------------------------


def _dead_pid() -> int:
    """The pid of a process of this host that has exited (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    with pytest.raises(ProcessLookupError):
        os.kill(process.pid, 0)
    return process.pid


def _running_job_with_lines(worker: str, heartbeat_age: timedelta = timedelta(0), lines: int = 3) -> Job:
    """A run another process was running: some stored lines, status running."""
    now = timezone.now()
    job = Job.objects.create(
        name="runner_tests.hello",
        status=JobStatus.RUNNING,
        started_at=now - heartbeat_age,
        worker=worker,
        heartbeat_at=now - heartbeat_age,
        line_count=lines,
    )
    LogLine.objects.bulk_create(
        LogLine(job=job, number=number, stream=LogStream.STDOUT, text=f"line {number}")
        for number in range(1, lines + 1)
    )
    return job


def _assert_lost_with_note(job: Job, lines: int, note_contains: str) -> None:
    job.refresh_from_db()
    assert job.status == JobStatus.LOST
    assert job.finished_at is not None
    assert job.line_count == lines + 1
    stored = list(LogLine.objects.filter(job=job).order_by("number").values_list("number", "stream", "text"))
    # Earlier lines untouched, one system line appended after them.
    assert stored[:lines] == [(number, LogStream.STDOUT, f"line {number}") for number in range(1, lines + 1)]
    assert len(stored) == lines + 1
    number, stream, text = stored[-1]
    assert (number, stream) == (lines + 1, LogStream.SYSTEM)
    assert note_contains in text
    assert job.error == text


@pytest.mark.django_db(transaction=True)
def test_recovery_marks_runs_of_a_dead_local_process_lost() -> None:
    pid = _dead_pid()
    job = _running_job_with_lines(f"{socket.gethostname()}:{pid}:x")

    assert recover_runs_of_dead_processes() == 1

    _assert_lost_with_note(job, 3, f"pid {pid}")
    assert recover_runs_of_dead_processes() == 0  # once only


@pytest.mark.django_db(transaction=True)
def test_a_starting_supervisor_marks_runs_of_a_dead_local_process_lost() -> None:
    pid = _dead_pid()
    job = _running_job_with_lines(f"{socket.gethostname()}:{pid}:x")

    supervisor = Supervisor(process_identity())  # what a restarted server process starts
    supervisor.start()
    try:
        wait_for(lambda: Job.objects.filter(pk=job.pk, status=JobStatus.LOST).exists(), "the run to be marked lost")
    finally:
        supervisor.stop()

    _assert_lost_with_note(job, 3, "has exited")


@pytest.mark.django_db(transaction=True)
def test_recovery_leaves_runs_of_live_local_processes_alone() -> None:
    # This very process, with another token: alive, so its run is not lost at start-up.
    with override_settings(RUNLOG_LOST_AFTER=3600.0):  # only the pid check may decide here
        job = _running_job_with_lines(f"{socket.gethostname()}:{os.getpid()}:other")

        recover_runs_of_dead_processes()

        job.refresh_from_db()
        assert job.status == JobStatus.RUNNING
        assert job.line_count == 3


@pytest.mark.django_db(transaction=True)
def test_stale_heartbeat_marks_a_run_lost() -> None:
    # Another host: its pid means nothing here, only the heartbeat tells.
    job = _running_job_with_lines("elsewhere:12345:x", heartbeat_age=timedelta(hours=1))

    mark_stale_runs_lost()  # the live supervisor may have got there first: judge the result

    _assert_lost_with_note(job, 3, "stopped sending heartbeats")


@pytest.mark.django_db(transaction=True)
def test_live_supervisor_marks_a_stale_run_lost() -> None:
    start()
    job = _running_job_with_lines("elsewhere:12345:x", heartbeat_age=timedelta(hours=1))

    wait_for(lambda: Job.objects.filter(pk=job.pk, status=JobStatus.LOST).exists(), "the supervisor's sweep")

    _assert_lost_with_note(job, 3, "stopped sending heartbeats")


@pytest.mark.django_db(transaction=True)
def test_recent_heartbeat_is_not_lost() -> None:
    # Lost-after is an hour here, so a second-old heartbeat is recent whatever the machine's
    # speed; it is recent too for a server or worker of another test still sweeping this
    # database with the test settings' LOST_AFTER.
    with override_settings(RUNLOG_LOST_AFTER=3600.0):
        job = _running_job_with_lines("elsewhere:12345:x", heartbeat_age=timedelta(seconds=1))
        old = _running_job_with_lines("elsewhere:12346:x", heartbeat_age=timedelta(hours=2))

        mark_stale_runs_lost()

        job.refresh_from_db()
        assert job.status == JobStatus.RUNNING
        assert job.line_count == 3
        assert not LogLine.objects.filter(job=job, stream=LogStream.SYSTEM).exists()
        old.refresh_from_db()
        assert old.status == JobStatus.LOST


@pytest.mark.django_db(transaction=True)
def test_a_run_longer_than_lost_after_is_kept_alive_by_heartbeats(gate: tuple[str, threading.Event]) -> None:
    key, release = gate
    job = jobs.launch("runner_tests.gated", gate=key)
    wait_for_line(job, "waiting")
    job.refresh_from_db()
    started_at = job.started_at
    assert started_at is not None
    # Let it run well past LOST_AFTER (5 s in the test settings).
    beyond = timedelta(seconds=runlog_settings.LOST_AFTER + 2 * runlog_settings.HEARTBEAT_INTERVAL)
    wait_for(lambda: timezone.now() - started_at > beyond, "the run to outlive LOST_AFTER")

    mark_stale_runs_lost()
    job.refresh_from_db()
    assert job.status == JobStatus.RUNNING
    assert job.heartbeat_at is not None and job.heartbeat_at > started_at

    release.set()
    wait_finished(job)
    assert job.status == JobStatus.SUCCEEDED
    assert log_texts(job) == ["waiting", "released"]


# --- Lines, progress, connections, claims ------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("then", "status"), [("return", JobStatus.SUCCEEDED), ("raise", JobStatus.FAILED)])
def test_every_line_is_stored_before_the_final_status(then: str, status: str) -> None:
    printed = 20_000
    job = jobs.launch("runner_tests.many_lines", lines=printed, then=then)

    # Watch the run: the first time it reads as finished, all of its lines must be there.
    def final_status() -> tuple[str, int] | None:
        current, line_count = Job.objects.values_list("status", "line_count").get(pk=job.pk)
        return (current, line_count) if current in JobStatus.finished_values() else None

    final, line_count = wait_for(final_status, "the run to finish")
    stored = LogLine.objects.filter(job_id=job.pk).count()

    assert final == status
    assert line_count == stored
    stdout = LogLine.objects.filter(job_id=job.pk, stream=LogStream.STDOUT)
    assert stdout.count() == printed
    assert stdout.order_by("-number").values_list("text", flat=True).first() == f"line {printed}"
    assert_contiguous(job)


@pytest.mark.django_db(transaction=True)
def test_progress_is_written_to_the_job(gate: tuple[str, threading.Event]) -> None:
    key, release = gate
    job = jobs.launch("runner_tests.progress", gate=key)

    # While it runs: the job page can show how far it is.
    wait_for(
        lambda: Job.objects.filter(pk=job.pk, status=JobStatus.RUNNING, progress_done=1).exists(),
        "the first progress update",
    )
    job.refresh_from_db()
    assert (job.progress_done, job.progress_total, job.progress_message) == (1, 4, "first step")

    release.set()
    wait_finished(job)
    # Updates made faster than the throttle allows still end on the last one.
    assert job.status == JobStatus.SUCCEEDED
    assert (job.progress_done, job.progress_total, job.progress_message) == (4, 4, "step 4 of 4")


@pytest.mark.django_db(transaction=True)
def test_worker_threads_close_their_connections_after_a_run() -> None:
    key = uuid.uuid4().hex
    runs = 2 * runlog_settings.WORKERS  # enough for every worker thread to run one
    postgres = connection.vendor == "postgresql"

    def backends() -> set[int]:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            return {row[0] for row in cursor.fetchall()}

    start()
    before = backends() if postgres else set()
    launched = [jobs.launch("runner_tests.connection", key=key) for _ in range(runs)]
    for run in launched:
        wait_finished(run)
        assert run.status == JobStatus.SUCCEEDED

    wrappers = _connections[key]
    assert len(wrappers) == runs
    wait_for(lambda: all(wrapper.connection is None for wrapper in wrappers), "the job threads to disconnect")
    if postgres:
        used = {int(text.split()[1]) for run in launched for text in log_texts(run)}
        assert used  # the jobs did talk to the database
        wait_for(lambda: not used & backends(), "the job threads' backends to exit")
        # No growth: the flusher and supervisor let go of theirs when idle, too.
        wait_for(lambda: len(backends()) <= len(before), "the connection count to come back down")


@pytest.mark.django_db(transaction=True)
def test_running_a_finished_job_again_does_nothing(gate: tuple[str, threading.Event]) -> None:
    key, release = gate
    release.set()
    job = run_now("runner_tests.count_runs", gate=key)
    assert job.status == JobStatus.SUCCEEDED

    again = start().run(Job.objects.get(pk=job.pk))

    assert again.status == JobStatus.SUCCEEDED
    assert _runs[key] == 1
    assert log_texts(job) == ["running"]


@pytest.mark.django_db(transaction=True)
def test_a_job_submitted_twice_runs_once(gate: tuple[str, threading.Event], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="jobs.running.runner")
    key, release = gate
    start()
    job = create_run("runner_tests.count_runs", {"gate": key})

    enqueue(job)
    enqueue(job)
    # The run holds its worker until released, so the second submission meets a running job.
    wait_for(
        lambda: any("not queued: not running it again" in record.getMessage() for record in caplog.records),
        "the second worker to give up the run",
    )
    release.set()
    wait_finished(job)

    assert job.status == JobStatus.SUCCEEDED
    assert _runs[key] == 1
    assert log_texts(job) == ["running"]


@pytest.mark.django_db(transaction=True)
def test_a_task_for_a_run_deleted_meanwhile_runs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    """A task is delivered for a run deleted since it was queued (pruned, or by hand): the
    worker says so and goes on to its next task."""
    caplog.set_level(logging.WARNING, logger="jobs.running.runner")
    job = create_run("runner_tests.hello", {})
    Job.objects.filter(pk=job.pk).delete()

    get_runner().run_queued(job.pk)

    assert [record.getMessage() for record in caplog.records] == [
        f"Job {job.pk} does not exist (deleted?): nothing to run"
    ]
    assert not Job.objects.exists()
