"""jobs.run_command: a child process's output streams into the job's log, live, line by line."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import jobs
from jobs import demo, job, run_command
from jobs.launcher import cancel_run
from jobs.models import Job, JobStatus, LogLine, LogStream
from tests.conftest import assert_contiguous, log_texts, run_now, wait_finished, wait_for


@job("run_command_tests.command")
def command_job(
    argv: str,
    check: bool = False,
    timeout: float | None = None,
    echo: bool = True,
    cwd: str = "",
    env: str = "{}",
) -> None:
    """Runs the JSON list `argv` with run_command, then prints the exit code it returned."""
    returncode = run_command(
        json.loads(argv), check=check, timeout=timeout, echo=echo, cwd=cwd or None, env=json.loads(env)
    )
    print(f"exit code {returncode}")


def launch_command(args: list[str], **options: object) -> Job:
    return jobs.launch("run_command_tests.command", argv=json.dumps(args), **options)


def run_command_now(args: list[str], **options: object) -> Job:
    return run_now("run_command_tests.command", argv=json.dumps(args), **options)


def echo_line(args: list[str]) -> str:
    return f"$ {shlex.join(args)}"


def ending(args: list[str], how: str) -> re.Pattern[str]:
    """The system line that ends a command's output, whatever its duration."""
    return re.compile(re.escape(f"Command {args} {how} in ") + r"\d+\.\d s\.")


def python_script(tmp_path: Path, source: str) -> str:
    """A child script in a file, so that the logged command line stays one line."""
    path = tmp_path / "child.py"
    path.write_text(textwrap.dedent(source))
    return str(path)


def line_stored(run: Job, text: str) -> bool:
    return LogLine.objects.filter(job=run, text=text).exists()


@contextmanager
def released_by(sentinel: Path) -> Iterator[None]:
    """The child waits for `sentinel`; make sure it exists at the end whatever happens, so a
    failing test never leaves a child (and a worker thread) waiting forever."""
    try:
        yield
    finally:
        sentinel.touch()


def pid_running(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie, killed but not yet reaped, is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


# --- Tests -------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_demo_command_stores_the_command_line_and_the_childs_stdout_and_stderr() -> None:
    run = run_now("demo.command", seconds=2)
    assert run.status == JobStatus.SUCCEEDED, run.error
    texts = log_texts(run)
    args = [sys.executable, str(demo._CHILD), "2"]
    assert texts[0] == echo_line(args)
    command_line, end_line = log_texts(run, LogStream.SYSTEM)
    assert command_line == echo_line(args)
    assert ending(args, "exited with code 0").fullmatch(end_line)
    assert texts[-1] == end_line  # after all of the child's output
    assert log_texts(run, LogStream.STDOUT) == ["child: second 1 of 2", "child: second 2 of 2"]
    assert log_texts(run, LogStream.STDERR) == ["child: starting", "child: done"]
    assert_contiguous(run)  # refreshes run
    assert run.line_count == 6


@pytest.mark.django_db(transaction=True)
def test_a_childs_lines_are_stored_while_it_is_still_running(tmp_path: Path) -> None:
    sentinel = tmp_path / "go-on"
    # A shell child: prints, then blocks until the test creates the sentinel file.
    args = [
        "sh",
        "-c",
        'echo "child is up"; while [ ! -e "$0" ]; do sleep 0.05; done; echo "child saw the file"',
        str(sentinel),
    ]
    with released_by(sentinel):
        run = launch_command(args)
        wait_for(lambda: line_stored(run, "child is up"), "the child's first line is stored")
        # The child cannot have ended: it is still waiting for the sentinel.
        run.refresh_from_db()
        assert run.status == JobStatus.RUNNING
        assert not line_stored(run, "child saw the file")
    wait_finished(run)

    assert run.status == JobStatus.SUCCEEDED, run.error
    texts = log_texts(run)
    assert texts[:3] == [echo_line(args), "child is up", "child saw the file"]
    assert ending(args, "exited with code 0").fullmatch(texts[3])
    assert texts[4:] == ["exit code 0"]
    assert_contiguous(run)


@pytest.mark.django_db(transaction=True)
def test_a_python_child_gets_pythonunbuffered_and_streams_live_without_flushing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Whatever this process has, the child must be told not to buffer.
    monkeypatch.delenv("PYTHONUNBUFFERED", raising=False)
    sentinel = tmp_path / "go-on"
    script = python_script(
        tmp_path,
        """
        import os, sys, time
        print("PYTHONUNBUFFERED=" + os.environ.get("PYTHONUNBUFFERED", "unset"))  # no flush
        while not os.path.exists(sys.argv[1]):
            time.sleep(0.05)
        print("finished")
        """,
    )
    with released_by(sentinel):
        run = launch_command([sys.executable, script, str(sentinel)], env=json.dumps({"PYTHONUNBUFFERED": "0"}))
        wait_for(lambda: line_stored(run, "PYTHONUNBUFFERED=1"), "the child's unflushed line is stored")
        run.refresh_from_db()
        assert run.status == JobStatus.RUNNING
    wait_finished(run)

    assert run.status == JobStatus.SUCCEEDED, run.error
    assert log_texts(run, LogStream.STDOUT) == ["PYTHONUNBUFFERED=1", "finished", "exit code 0"]


@pytest.mark.django_db(transaction=True)
def test_invalid_utf8_from_the_child_becomes_replacement_characters(tmp_path: Path) -> None:
    sentinel = tmp_path / "go-on"
    script = python_script(
        tmp_path,
        r"""
        import os, sys, time
        out, err = sys.stdout.buffer, sys.stderr.buffer
        out.write(b"before\nbad \xff\xfe bytes\ncaf\xc3")
        out.flush()
        while not os.path.exists(sys.argv[1]):  # until the test has seen the first read stored
            time.sleep(0.05)
        out.write(b"\xa9 split\nafter\n")
        err.write(b"err \x80 end\ntruncated \xe2\x82")
        """,
    )
    with released_by(sentinel):
        run = launch_command([sys.executable, script, str(sentinel)])
        # The first byte of "©" came in that read: the split character must still decode.
        wait_for(lambda: line_stored(run, "bad \ufffd\ufffd bytes"), "the child's first lines are stored")
    run = wait_finished(run)
    assert run.status == JobStatus.SUCCEEDED, run.error
    expected = ["before", "bad \ufffd\ufffd bytes", "café split", "after", "exit code 0"]
    assert log_texts(run, LogStream.STDOUT) == expected
    assert log_texts(run, LogStream.STDERR) == ["err \ufffd end", "truncated \ufffd"]
    assert_contiguous(run)


@pytest.mark.django_db(transaction=True)
def test_a_childs_last_line_without_newline_is_stored_as_its_own_line() -> None:
    args = ["sh", "-c", "printf 'first\\nno newline at the end'; printf 'error without newline' >&2"]
    run = run_command_now(args)
    assert run.status == JobStatus.SUCCEEDED, run.error
    # The job's own next print starts a new line: it does not join the child's last one.
    assert log_texts(run, LogStream.STDOUT) == ["first", "no newline at the end", "exit code 0"]
    assert log_texts(run, LogStream.STDERR) == ["error without newline"]
    assert_contiguous(run)


@pytest.mark.django_db(transaction=True)
def test_the_exit_code_is_returned_and_a_failing_child_does_not_fail_the_job() -> None:
    args = [sys.executable, "-c", "import sys; print('exiting'); sys.exit(3)"]
    run = run_command_now(args)
    assert run.status == JobStatus.SUCCEEDED, run.error
    texts = log_texts(run)
    assert texts[:2] == [echo_line(args), "exiting"]
    assert ending(args, "exited with code 3").fullmatch(texts[2])
    assert texts[3:] == ["exit code 3"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL])
def test_a_child_killed_by_a_signal_ends_with_a_line_naming_it(signum: signal.Signals) -> None:
    args = [sys.executable, "-c", f"import os; print('dying'); os.kill(os.getpid(), {int(signum)})"]
    run = run_command_now(args)
    assert run.status == JobStatus.SUCCEEDED, run.error
    texts = log_texts(run)
    assert texts[:2] == [echo_line(args), "dying"]
    assert ending(args, f"was killed by {signum.name}").fullmatch(texts[2])
    assert texts[3:] == [f"exit code {-signum}"]


@pytest.mark.django_db(transaction=True)
def test_a_child_killed_by_a_cancel_ends_with_a_line_naming_the_signal() -> None:
    args = [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(600)"]
    run = launch_command(args)
    wait_for(lambda: line_stored(run, "up"), "the child to start")
    cancel_run(run.id)
    wait_finished(run)
    assert run.status == JobStatus.CANCELLED
    *_, end_line, cancelled = log_texts(run, LogStream.SYSTEM)
    assert ending(args, "was killed by SIGTERM").fullmatch(end_line)
    assert cancelled == "Cancelled on request."


@pytest.mark.django_db(transaction=True)
def test_check_raises_called_process_error_which_fails_the_job() -> None:
    args = [sys.executable, "-c", "import sys; print('exiting'); sys.exit(3)"]
    run = run_command_now(args, check=True)
    assert run.status == JobStatus.FAILED
    assert run.error == f"CalledProcessError: Command '{args}' returned non-zero exit status 3."
    assert log_texts(run, LogStream.STDOUT) == ["exiting"]  # the job's print after it never ran
    assert ending(args, "exited with code 3").fullmatch(log_texts(run, LogStream.SYSTEM)[1])
    assert log_texts(run, LogStream.STDERR)[-1].startswith("subprocess.CalledProcessError: ")
    assert_contiguous(run)


@pytest.mark.django_db(transaction=True)
def test_cwd_env_and_echo_false(tmp_path: Path) -> None:
    args = [sys.executable, "-c", "import os; print(os.getcwd()); print(os.environ['RUNLOG_TEST_VALUE'])"]
    run = run_command_now(args, cwd=str(tmp_path), env=json.dumps({"RUNLOG_TEST_VALUE": "from env"}), echo=False)
    assert run.status == JobStatus.SUCCEEDED, run.error
    assert log_texts(run, LogStream.SYSTEM) == []
    assert log_texts(run) == [os.path.realpath(tmp_path), "from env", "exit code 0"]


def kill_leftovers(pid_file: Path, run: Job) -> None:
    """Should the product not have killed the processes listed in `pid_file`, do not leave
    them behind; then let the run end, so its worker is free before the database goes."""
    pids = [int(pid) for pid in (pid_file.read_text().split() if pid_file.exists() else [])]
    leftovers = [pid for pid in pids if pid_running(pid)]
    for pid in leftovers:
        os.kill(pid, signal.SIGKILL)
    if leftovers:
        wait_finished(run)


@contextmanager
def timed_out_run(args: list[str], pid_file: Path, *, timeout: float, within: float) -> Iterator[Job]:
    """Launch `args` with `timeout` and wait up to `within` s for the run to fail with
    TimeoutExpired; on the way out, kill what `pid_file` lists should it still be there."""
    run = launch_command(args, timeout=timeout)
    try:
        wait_finished(run, timeout=within)
        assert run.status == JobStatus.FAILED
        assert run.error.startswith("TimeoutExpired: ")
        yield run
    finally:
        kill_leftovers(pid_file, run)


@pytest.mark.django_db(transaction=True)
def test_timeout_kills_the_child_and_its_grandchild_and_raises(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    # The child starts a long-sleeping grandchild, notes both pids, then waits for it.
    args = ["sh", "-c", 'sleep 600 & echo "$$ $!" > "$0"; echo "waiting for the grandchild"; wait', str(pids)]
    # A surviving grandchild would hold the pipe open and the job would never end.
    with timed_out_run(args, pids, timeout=2, within=30) as run:
        assert "timed out after 2" in run.error
        assert log_texts(run)[:2] == [echo_line(args), "waiting for the grandchild"]
        assert log_texts(run, LogStream.STDERR)[-1].startswith("subprocess.TimeoutExpired: ")
        assert "exit code" not in " ".join(log_texts(run))
        assert ending(args, "timed out after 2 s and was killed").fullmatch(log_texts(run, LogStream.SYSTEM)[-1])
        child_pid, grandchild_pid = (int(pid) for pid in pids.read_text().split())
        wait_for(lambda: not pid_running(child_pid), "the child is gone", timeout=10)
        wait_for(lambda: not pid_running(grandchild_pid), "the grandchild is gone", timeout=10)


def test_outside_a_job_the_child_inherits_the_process_streams_and_the_exit_code_is_returned(
    capfd: pytest.CaptureFixture[str],
) -> None:
    code = "import sys; print('child stdout'); print('child stderr', file=sys.stderr); sys.exit(4)"
    assert run_command([sys.executable, "-c", code]) == 4
    captured = capfd.readouterr()
    assert captured.out == "child stdout\n"
    assert captured.err == "child stderr\n"


def test_outside_a_job_check_and_timeout_raise() -> None:
    with pytest.raises(subprocess.CalledProcessError) as failed:
        run_command([sys.executable, "-c", "raise SystemExit(4)"], check=True)
    assert failed.value.returncode == 4
    assert run_command([sys.executable, "-c", "pass"], check=True) == 0
    with pytest.raises(subprocess.TimeoutExpired):
        run_command([sys.executable, "-c", "import time; time.sleep(60)"], timeout=0.5)


@pytest.mark.django_db(transaction=True)
def test_timeout_also_kills_a_grandchild_left_holding_the_output_after_the_child_exited(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    # The child exits at once; its grandchild sleeps on with the child's stdout and stderr.
    args = ["sh", "-c", 'sleep 600 & echo "$!" > "$0"; echo "left a grandchild"', str(pid_file)]
    # Generous against the 1 s timeout; without it the run would take the grandchild's 600 s.
    with timed_out_run(args, pid_file, timeout=1, within=15) as run:
        assert log_texts(run)[:2] == [echo_line(args), "left a grandchild"]
        assert ending(args, "timed out after 1 s and was killed").fullmatch(log_texts(run, LogStream.SYSTEM)[-1])
        grandchild_pid = int(pid_file.read_text())
        wait_for(lambda: not pid_running(grandchild_pid), "the grandchild is gone", timeout=10)
