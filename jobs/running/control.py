"""The context of one running job, and the calls a job makes to cooperate with it.

A job stops when it is cancelled or times out: at its next output, at `sleep()` or
`checkpoint()`, and its subprocesses are killed. `JobCancelled` derives from BaseException
so that a job's own `except Exception:` does not swallow it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from jobs.conf import runlog_settings

if TYPE_CHECKING:
    from jobs.logstore.writer import LogWriter


class JobCancelled(BaseException):
    """Raised inside a job that was asked to stop (cancel or timeout)."""


class CancelReason:
    REQUESTED = "requested"
    TIMEOUT = "timeout"
    SHUTDOWN = "shutdown"
    STORAGE = "storage"


class JobContext:
    """Everything a running job's threads share: its log writer and its stop switch."""

    def __init__(self, job_id: uuid.UUID, name: str, writer: LogWriter, timeout: float | None) -> None:
        self.job_id = job_id
        self.name = name
        self.writer = writer
        self.timeout = timeout
        self.cancel_reason: str | None = None
        self._stop = threading.Event()
        self._processes: set[subprocess.Popen[bytes]] = set()
        self._lock = threading.Lock()
        # Threads that have already been interrupted by JobCancelled: each thread gets it
        # once, so that a job's `finally:` blocks can still print while it unwinds.
        self._interrupted_threads: set[int] = set()

    @property
    def cancelled(self) -> bool:
        return self._stop.is_set()

    def cancel(self, reason: str = CancelReason.REQUESTED) -> bool:
        """Ask the job to stop and kill its subprocesses. False if it was already stopping."""
        with self._lock:
            if self._stop.is_set():
                return False
            self.cancel_reason = reason
            self._stop.set()
            processes = list(self._processes)
        self.writer.interrupt()
        for process in processes:
            _terminate_group(process)
        return True

    def raise_if_cancelled(self) -> None:
        """Raise JobCancelled in this thread, once, if the job was asked to stop."""
        if not self._stop.is_set():
            return
        ident = threading.get_ident()
        with self._lock:
            if ident in self._interrupted_threads:
                return
            self._interrupted_threads.add(ident)
        raise JobCancelled(self.cancel_reason)

    def wait(self, seconds: float) -> None:
        """Sleep up to `seconds`, waking at once on cancel."""
        if self._stop.wait(seconds):
            self.raise_if_cancelled()

    def track_process(self, process: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self._processes.add(process)
            stopping = self._stop.is_set()
        if stopping:
            _terminate_group(process)

    def untrack_process(self, process: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self._processes.discard(process)


def _terminate_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group now, SIGKILL it after the grace period if still alive."""
    signal_process_group(process, signal.SIGTERM)
    killer = threading.Timer(runlog_settings.KILL_GRACE, _kill_if_alive, args=(process,))
    killer.daemon = True
    killer.start()


def _kill_if_alive(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        signal_process_group(process, signal.SIGKILL)


def signal_process_group(process: subprocess.Popen[bytes], signum: int) -> None:
    """Signal the child and everything it started (run_command gives it its own session)."""
    try:
        os.killpg(process.pid, signum)  # run_command starts each child in its own session
    except (ProcessLookupError, PermissionError):
        pass


# --- The job-facing API -------------------------------------------------------------------


def current_context() -> JobContext | None:
    """The context of the job this thread is running (or was started by), if any."""
    from jobs.running.capture import thread_context

    return thread_context()


def checkpoint() -> None:
    """Stop here if the current job was cancelled. A no-op outside a job."""
    context = current_context()
    if context is not None:
        context.raise_if_cancelled()


def sleep(seconds: float) -> None:
    """time.sleep() that ends early, raising JobCancelled, when the job is cancelled."""
    context = current_context()
    if context is None:
        threading.Event().wait(seconds)
    else:
        context.raise_if_cancelled()
        context.wait(seconds)


def progress(done: float, total: float | None = None, message: str = "") -> None:
    """Record how far the current job is; the job page shows it. Cheap to call often."""
    context = current_context()
    if context is not None:
        context.writer.set_progress(done, total, message)
        context.raise_if_cancelled()


_LINE_BREAKS = re.compile(r"[\r\n]+")


@contextmanager
def section(title: str) -> Iterator[None]:
    """Show the block's output as a collapsible section named `title` on the job page: a
    line `::group::<title>` before it and `::endgroup::` after it (GitHub Actions' markers),
    also when the block raises; its exception goes on. A title is made one line."""
    _write_marker(f"::group::{_LINE_BREAKS.sub(' ', str(title))}")
    try:
        yield
    finally:
        _write_marker("::endgroup::")


def _write_marker(line: str) -> None:
    """On the job's stdout, even while the job is being stopped (a print then raises
    JobCancelled instead), so that a section always ends where its block did."""
    context = current_context()
    if context is None:
        print(line)
    else:
        context.writer.write_forced(context.writer.stdout, line + "\n")
