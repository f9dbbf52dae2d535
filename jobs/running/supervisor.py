"""The supervisor: one thread per process that keeps its runs honest.

- heartbeats: every HEARTBEAT_INTERVAL it stamps `heartbeat_at` on the runs this process
  owns (queued and running), in one UPDATE;
- lost runs: it marks as "lost" any unfinished run whose owner stopped heartbeating for
  LOST_AFTER seconds, and at start-up any run owned by a dead process on this host;
- cancel requests made in other processes: it polls `cancel_requested` for its own runs
  every CANCEL_POLL_INTERVAL while it has any;
- timeouts: it cancels a run whose time is up.

It sleeps on an Event until the next of those is due: no busy-waiting.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.utils import timezone

from jobs.conf import runlog_settings
from jobs.logstore.notify import announce
from jobs.models import Job, JobStatus
from jobs.retention import expired, parse_age, prune
from jobs.running.control import CancelReason, JobContext

logger = logging.getLogger(__name__)

#: Seconds between two deletions of runs older than RUNLOG_RETENTION.
RETENTION_INTERVAL = 3600.0


def process_identity() -> str:
    """host:pid:token. The token tells this process from a later one that reuses its pid."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass
class _Tracked:
    context: JobContext
    deadline: float | None  # time.monotonic() when it times out


class Supervisor:
    def __init__(self, identity: str) -> None:
        self.identity = identity
        self._tracked: dict[uuid.UUID, _Tracked] = {}
        self._unrecorded_ends: dict[uuid.UUID, tuple[JobStatus, str, str | None]] = {}
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)  # notified when a run is untracked
        self._wake = threading.Event()
        self._stopping = False
        self._retention = False
        self._thread: threading.Thread | None = None

    def start(self, *, retention: bool = False) -> None:
        """Start the thread (once). With `retention`, it also deletes runs older than
        RUNLOG_RETENTION once an hour (what worker processes do)."""
        self._retention = self._retention or retention
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="runlog-supervisor", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """End the supervisor thread (its runs get no more heartbeats)."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._stopping = False

    def track(self, context: JobContext) -> None:
        deadline = time.monotonic() + context.timeout if context.timeout else None
        with self._lock:
            self._tracked[context.job_id] = _Tracked(context, deadline)
        self._wake.set()

    def untrack(self, job_id: uuid.UUID) -> None:
        with self._lock:
            self._tracked.pop(job_id, None)
            self._idle.notify_all()

    def running(self) -> list[JobContext]:
        with self._lock:
            return [tracked.context for tracked in self._tracked.values()]

    def cancel(self, job_id: uuid.UUID, reason: str = CancelReason.REQUESTED, by: str | None = None) -> bool:
        """Cancel a run of this process. False if this process is not running it."""
        with self._lock:
            tracked = self._tracked.get(job_id)
        return tracked is not None and tracked.context.cancel(reason, by)

    def wait_idle(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds until this process runs no job; True if it runs none."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._tracked, timeout)

    # --- The supervisor thread --------------------------------------------------------------

    def _run(self) -> None:
        self._guarded(recover_runs_of_dead_processes)
        next_heartbeat = next_cancel_poll = next_prune = time.monotonic()
        while not self._stopping:
            now = time.monotonic()
            self._fire_timeouts(now)
            with self._lock:
                busy = bool(self._tracked)
            if now >= next_heartbeat:
                self._guarded(self._heartbeat)
                self._guarded(mark_stale_runs_lost)
                next_heartbeat = now + runlog_settings.HEARTBEAT_INTERVAL
            if busy and now >= next_cancel_poll:
                self._guarded(self._apply_cancel_requests)
                next_cancel_poll = now + runlog_settings.CANCEL_POLL_INTERVAL
            if self._retention and now >= next_prune:
                self._guarded(apply_retention)
                next_prune = now + RETENTION_INTERVAL
            if not busy:
                connection.close()  # nothing running here: hold no connection while idle
            due = [next_heartbeat] + ([next_cancel_poll] if busy else []) + self._deadlines()
            if self._retention:
                due.append(next_prune)
            self._wake.wait(max(0.0, min(due) - time.monotonic()))
            self._wake.clear()
        connection.close()

    def _guarded(self, step: Callable[[], object]) -> None:
        try:
            step()
        except Exception:
            logger.exception("Runlog supervisor step failed; it will run again")
            connection.close()

    def _deadlines(self) -> list[float]:
        with self._lock:
            return [tracked.deadline for tracked in self._tracked.values() if tracked.deadline is not None]

    def _fire_timeouts(self, now: float) -> None:
        with self._lock:
            expired = [t for t in self._tracked.values() if t.deadline is not None and t.deadline <= now]
            for tracked in expired:
                tracked.deadline = None  # fired once; the run is winding down
        for tracked in expired:
            tracked.context.cancel(CancelReason.TIMEOUT)

    def _heartbeat(self) -> None:
        # One UPDATE of many rows locks them in whatever order its scan meets them, and
        # deadlocked with the flusher updating the same runs' line counts (seen on
        # PostgreSQL). Both lock the rows in primary key order instead (jobs.logstore.storage).
        with transaction.atomic():
            mine = Job.objects.owned_by(self.identity).order_by("pk").select_for_update(no_key=True)
            ids = list(mine.values_list("pk", flat=True))
            Job.objects.filter(pk__in=ids).update(heartbeat_at=timezone.now())
        with self._lock:
            unrecorded = dict(self._unrecorded_ends)
        for job_id, (status, error, note) in unrecorded.items():
            end_run(job_id, status, error, note=note)
            with self._lock:
                self._unrecorded_ends.pop(job_id, None)

    def end_later(self, job_id: uuid.UUID, status: JobStatus, error: str, note: str | None = None) -> None:
        """A run of this process ended, but its end could not be saved (the database stayed
        away past every retry): record it at the next heartbeat that reaches the database;
        until then it stays alive like any run of ours. The first reason given is kept."""
        with self._lock:
            self._unrecorded_ends.setdefault(job_id, (status, error, note))

    def _apply_cancel_requests(self) -> None:
        with self._lock:
            mine = list(self._tracked)
        requester = f"cancelled_by__{get_user_model().USERNAME_FIELD}"
        requested = Job.objects.filter(pk__in=mine, cancel_requested=True).values_list("pk", requester)
        for job_id, username in requested:
            self.cancel(job_id, CancelReason.REQUESTED, username)


def apply_retention() -> None:
    """Delete the finished runs older than RUNLOG_RETENTION, if it is set."""
    if runlog_settings.RETENTION is None:
        return
    pruned = prune(expired(parse_age(runlog_settings.RETENTION)))
    if pruned.runs:
        logger.info(
            "Deleted %d run(s) and %d line(s) older than %s", pruned.runs, pruned.lines, runlog_settings.RETENTION
        )


def mark_stale_runs_lost() -> int:
    """Mark lost every unfinished run whose owner has not heartbeated for LOST_AFTER s."""
    lost_after = runlog_settings.LOST_AFTER
    stale = Job.objects.stale(timezone.now(), lost_after).values_list("pk", flat=True)
    reason = f"Run lost: the process running it stopped sending heartbeats for over {lost_after:g} s."
    return sum(end_run(job_id, JobStatus.LOST, reason, stale_for=lost_after) for job_id in stale)


def recover_runs_of_dead_processes() -> int:
    """At start-up: runs owned by a process of this host that no longer exists are lost now."""
    host = socket.gethostname()
    lost = 0
    for job_id, worker in Job.objects.unfinished().filter(worker__startswith=f"{host}:").values_list("pk", "worker"):
        pid = _pid_of(worker)
        if pid is not None and not _pid_alive(pid):
            reason = f"Run lost: the process running it (pid {pid} on {host}) has exited."
            lost += end_run(job_id, JobStatus.LOST, reason)
    return lost


def end_run(
    job_id: uuid.UUID, status: JobStatus, reason: str, stale_for: float | None = None, note: str | None = None
) -> bool:
    """End a run that no job thread will end (lost, never started, or whose end could not
    be saved) with `status`, `reason` as its error and a system line (`note`, else the
    reason), if it is still unfinished (and, with `stale_for`, still without a recent
    heartbeat). True if this call did it."""
    with transaction.atomic():
        job = Job.objects.select_for_update().filter(pk=job_id).unfinished().first()
        if job is None:
            return False
        if (
            stale_for is not None
            and job.heartbeat_at
            and (timezone.now() - job.heartbeat_at).total_seconds() < stale_for
        ):
            return False
        job.end_with_line(status, reason, note or reason)
        announce(job.id, job.line_count)
    logger.warning("Job %s ended %s: %s", job_id, status, reason)
    return True


def _pid_of(worker: str) -> int | None:
    parts = worker.split(":")
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
