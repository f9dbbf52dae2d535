"""manage.py runjob, run as a user runs it: in its own process, against the test database."""

from __future__ import annotations

import queue
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO

import pytest

from jobs.models import Job, JobStatus, LogLine, LogStream
from tests.conftest import PROJECT_DIR, assert_contiguous, log_texts

# Each test starts runjob processes.
pytestmark = pytest.mark.slow

Manage = Callable[..., subprocess.CompletedProcess[str]]

PERMALINK = re.compile(r"^/jobs/(?P<id>[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})/$")
DEADLINE = 60.0


def job_of(stdout: str) -> Job:
    """The run whose permalink path is the first line of `stdout`."""
    first = stdout.splitlines()[0]
    match = PERMALINK.match(first)
    assert match, f"the first line is not a permalink path: {first!r}"
    return Job.objects.get(pk=uuid.UUID(match["id"]))


# --- Finished runs -----------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_success_prints_the_permalink_then_the_lines(manage: Manage) -> None:
    result = manage("runjob", "demo.count", "n=3", "interval=0")

    assert result.returncode == 0, result.stderr
    job = job_of(result.stdout)
    assert result.stdout.splitlines()[0] == job.get_absolute_url()
    assert result.stdout.splitlines()[1:] == ["Task #0", "Task #1", "Task #2", "Done"]
    assert job.status == JobStatus.SUCCEEDED
    assert job.params == {"n": 3, "interval": 0.0}
    assert "demo.count succeeded" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.django_db(transaction=True)
def test_the_permalink_is_a_whole_address_with_runlog_base_url(subprocess_env: dict[str, str]) -> None:
    env = {**subprocess_env, "RUNLOG_BASE_URL": "https://runlog.example.com"}
    result = subprocess.run(
        [sys.executable, "manage.py", "runjob", "demo.echo", "text=hi"],
        cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=DEADLINE,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    permalink, *lines = result.stdout.splitlines()
    site, path = permalink[:26], permalink[26:]
    assert site == "https://runlog.example.com"
    assert job_of(path).params == {"text": "hi", "times": 1}
    assert lines == ["hi"]


@pytest.mark.django_db(transaction=True)
def test_lines_are_stored_with_their_numbers(manage: Manage) -> None:
    result = manage("runjob", "demo.echo", "text=hello = world", "times=3")

    assert result.returncode == 0, result.stderr
    job = job_of(result.stdout)
    assert result.stdout.splitlines()[1:] == ["hello = world"] * 3  # only the first "=" splits
    stored = list(LogLine.objects.filter(job=job).order_by("number").values_list("number", "stream", "text"))
    assert stored == [(number, LogStream.STDOUT, "hello = world") for number in (1, 2, 3)]
    assert job.line_count == 3
    assert_contiguous(job)


@pytest.mark.django_db(transaction=True)
def test_failure_exits_1_and_keeps_the_traceback(manage: Manage) -> None:
    result = manage("runjob", "demo.fail")

    assert result.returncode == 1
    job = job_of(result.stdout)
    assert result.stdout.splitlines()[1:] == ["Preparing", "Loading data"]
    assert job.status == JobStatus.FAILED
    assert job.error == "RuntimeError: demo.fail failed on purpose"
    stderr = log_texts(job, LogStream.STDERR)
    assert stderr[0] == "About to fail"
    assert "Traceback (most recent call last):" in stderr
    assert stderr[-1] == "RuntimeError: demo.fail failed on purpose"
    # The terminal shows the job's stderr and a summary.
    assert "RuntimeError: demo.fail failed on purpose" in result.stderr
    assert "demo.fail failed" in result.stderr
    assert_contiguous(job)


# --- Bad command lines -----------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["runjob_tests.nope"], "No job is registered as 'runjob_tests.nope'"),
        (["demo.count", "n=abc"], "n: Enter a whole number."),
        (["demo.count", "n=3", "intervall=1"], "Unknown parameter(s): intervall"),
        (["demo.echo", "hello"], "Parameters are key=value; got 'hello'."),
        (["demo.echo", "=hello"], "Parameters are key=value; got '=hello'."),
    ],
    ids=["unknown-job", "bad-value", "unknown-parameter", "no-equals", "no-key"],
)
def test_usage_errors_exit_2_with_a_clear_message(manage: Manage, args: list[str], message: str) -> None:
    result = manage("runjob", *args)

    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stdout == ""  # no permalink: there is no run
    assert not Job.objects.exists()


# --- Stopping a run from outside ---------------------------------------------------------------------


class RunningCommand:
    """A `manage.py runjob` child whose stdout lines the test reads as they come."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.stderr: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._readers = [
            threading.Thread(target=self._read, args=(process.stdout, self._lines.put, True), daemon=True),
            threading.Thread(target=self._read, args=(process.stderr, self.stderr.append, False), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream: IO[str] | None, put: Callable[[str | None], None], mark_end: bool) -> None:
        assert stream is not None
        for line in stream:
            put(line.rstrip("\n"))
        if mark_end:
            put(None)  # next_line() must not wait for a line that will never come

    def next_line(self, deadline: float) -> str:
        try:
            line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError(f"runjob printed nothing more; stderr: {self.stderr}") from None
        assert line is not None, f"runjob ended early; stderr: {self.stderr}"
        return line

    def wait(self) -> int:
        returncode = self.process.wait(timeout=DEADLINE)
        for reader in self._readers:
            reader.join(DEADLINE)
        return returncode


#: Starts a command with SIGINT as a terminal gives it: a test suite started in the
#: background (SIGINT ignored, as shells start background jobs) must still test Ctrl-C.
WITH_CTRL_C = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])"
)


@contextmanager
def runjob(env: dict[str, str], *args: str) -> Iterator[RunningCommand]:
    process = subprocess.Popen(
        [sys.executable, "-c", WITH_CTRL_C, sys.executable, "manage.py", "runjob", *args],
        cwd=PROJECT_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield RunningCommand(process)
    finally:
        if process.poll() is None:  # a failed test must not leave it running
            process.kill()
            process.wait()


def start_counting(command: RunningCommand) -> Job:
    """Wait for the permalink and the first Task line; the run is then under way."""
    deadline = time.monotonic() + DEADLINE
    first = command.next_line(deadline)
    match = PERMALINK.match(first)
    assert match, f"the first line is not a permalink path: {first!r}"
    assert command.next_line(deadline) == "Task #0"
    return Job.objects.get(pk=uuid.UUID(match["id"]))


@pytest.mark.django_db(transaction=True)
def test_ctrl_c_cancels_the_run(subprocess_env: dict[str, str]) -> None:
    with runjob(subprocess_env, "demo.count", "n=100", "interval=0.2") as command:
        job = start_counting(command)

        command.process.send_signal(signal.SIGINT)
        returncode = command.wait()

    assert returncode == 1
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED
    assert log_texts(job)[-1] == "Cancelled on request."
    assert "Done" not in log_texts(job)
    assert "Cancelling the run..." in command.stderr
    assert not any("Traceback" in line for line in command.stderr)
    assert_contiguous(job)


@pytest.mark.django_db(transaction=True)
def test_cancel_requested_by_another_process_stops_runjob(subprocess_env: dict[str, str]) -> None:
    # The test process plays the web server: it only sets the flag in the database.
    with runjob(subprocess_env, "demo.count", "n=100", "interval=0.2") as command:
        job = start_counting(command)

        Job.objects.filter(pk=job.pk).update(cancel_requested=True)
        returncode = command.wait()

    assert returncode == 1
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED
    assert log_texts(job, LogStream.SYSTEM) == ["Cancelled on request."]
    assert "demo.count cancelled" in "\n".join(command.stderr)
