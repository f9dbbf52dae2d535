"""The context of one running job: its log writer, its stop switch, its subprocesses.

A job stops when it is cancelled or times out: at its next output, at `sleep()` or
`checkpoint()`, and its subprocesses are killed. `JobCancelled` derives from BaseException
so that a job's own `except Exception:` does not swallow it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from typing import IO, TYPE_CHECKING

from jobs.conf import runlog_settings

if TYPE_CHECKING:
    from jobs.logstore.writer import LogWriter


class JobCancelled(BaseException):
    """Raised inside a job that was asked to stop (cancel or timeout)."""


class CancelReason:
    REQUESTED = "requested"
    TIMEOUT = "timeout"
    SHUTDOWN = "shutdown"  # the server running it (threads backend) is stopping
    WORKER_SHUTDOWN = "worker_shutdown"  # its worker is stopping and the grace period ran out
    STORAGE = "storage"


def _process_stream(stream: str) -> IO[str]:
    return sys.__stdout__ if stream == "stdout" else sys.__stderr__  # type: ignore[return-value]


class JobContext:
    """Everything a running job's threads share: its log writer and its stop switch."""

    def __init__(
        self,
        job_id: uuid.UUID,
        name: str,
        writer: LogWriter,
        timeout: float | None,
        orphan_stream: Callable[[str], IO[str]] = _process_stream,
    ) -> None:
        self.job_id = job_id
        self.name = name
        self.writer = writer
        self.timeout = timeout
        #: Where a thread the job left behind writes once the run has ended (capture passes
        #: the process's own stdout and stderr).
        self.orphan_stream = orphan_stream
        self.cancel_reason: str | None = None
        self.cancelled_by: str | None = None  # the user who asked, if one did
        self._stop = threading.Event()
        self._processes: set[subprocess.Popen[bytes]] = set()
        self._lock = threading.Lock()
        # Threads that have already been interrupted by JobCancelled: each thread gets it
        # once, so that a job's `finally:` blocks can still print while it unwinds.
        self._interrupted_threads: set[int] = set()

    @property
    def cancelled(self) -> bool:
        return self._stop.is_set()

    def cancel(self, reason: str = CancelReason.REQUESTED, by: str | None = None) -> bool:
        """Ask the job to stop and kill its subprocesses. False if it was already stopping."""
        with self._lock:
            if self._stop.is_set():
                return False
            self.cancel_reason = reason
            self.cancelled_by = by
            self._stop.set()
            processes = list(self._processes)
        self.writer.interrupt()
        for process in processes:
            _terminate_group(process)
        return True

    def storage_failed(self) -> None:
        """The run's lines cannot be stored any more: stop it."""
        self.cancel(CancelReason.STORAGE)

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
