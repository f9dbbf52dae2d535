"""The process's log flusher: one thread that stores every job's lines in batches.

A writer wakes the flusher when it gets its first chunk since the last drain; the flusher
then drains every writer that has woken it, numbers their lines, stores them all in one
transaction, and publishes them to live viewers. While it stores one batch (and for the
rest of STORE_GAP) the jobs fill the next one, so batches grow with the output rate and a
line waits at most about one store behind (well under 100 ms). It sleeps on a queue when
nothing is written: no polling.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from typing import TYPE_CHECKING

from django.db import InterfaceError, OperationalError, connection
from django.utils import timezone

from jobs.choices import LogStream
from jobs.conf import runlog_settings
from jobs.logstore import storage
from jobs.logstore.dbretry import one_line, retrying
from jobs.logstore.hub import hub
from jobs.logstore.writer import Batch, LogWriter

if TYPE_CHECKING:
    from collections.abc import Iterable

logger = logging.getLogger(__name__)

#: Seconds without output after which the flusher closes its database connection.
IDLE_DISCONNECT = 2.0
#: Least seconds from the start of one store to the next: a job printing without pause is
#: stored (and announced to other processes) in a few transactions a second, not hundreds.
STORE_GAP = 0.01


class Flusher:
    def __init__(self) -> None:
        self._wakeups: queue.SimpleQueue[LogWriter] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        # Writers whose progress update is held back by PROGRESS_INTERVAL.
        self._progress_waiting: set[LogWriter] = set()

    def new_writer(self, job_id: uuid.UUID) -> LogWriter:
        self._ensure_started()
        return LogWriter(job_id, self._wakeups.put)

    def _ensure_started(self) -> None:
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="runlog-flusher", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            writers = self._next_writers()
            started = time.monotonic()
            try:
                self.flush(writers)
            except Exception:  # the flusher must outlive any one bad batch
                logger.exception("Runlog flusher failed on a batch")
            time.sleep(max(0.0, started + STORE_GAP - time.monotonic()))  # the jobs fill the next batch meanwhile

    def _next_writers(self) -> set[LogWriter]:
        """Block until a writer has something, then take every writer that does."""
        if self._progress_waiting:
            timeout: float | None = runlog_settings.PROGRESS_INTERVAL
        elif connection.connection is not None:
            timeout = IDLE_DISCONNECT
        else:
            timeout = None
        writers: set[LogWriter] = set()
        try:
            writers.add(self._wakeups.get(timeout=timeout))
        except queue.Empty:
            if not self._progress_waiting:
                connection.close()  # idle: give the database connection back
        while True:
            try:
                writers.add(self._wakeups.get_nowait())
            except queue.Empty:
                break
        writers |= self._progress_waiting
        self._progress_waiting = set()
        return writers

    def flush(self, writers: Iterable[LogWriter]) -> None:
        now = timezone.now()
        batches: list[tuple[LogWriter, Batch]] = []
        for writer in writers:
            if writer.done.is_set():
                continue
            try:
                batch = self._take_batch(writer, now)
            except Exception as exc:  # a bug must cost only this writer's run, not others'
                _stop_run(writer, exc)
                continue
            if batch is not None:
                batches.append((writer, batch))
        if not batches:
            return
        self._store(batches)
        for writer, batch in batches:
            if writer.failure is None:
                hub.publish(batch)
            if batch.finished:
                writer.done.set()

    def _take_batch(self, writer: LogWriter, now: object) -> Batch | None:
        segments, closed = writer.drain(runlog_settings.MAX_LINE_LENGTH)
        batch = Batch(job_id=writer.job_id, first_number=writer.next_number, segments=segments, created_at=now)
        if writer.failure is not None:
            # Storing failed for this run: later lines are counted, not stored.
            writer.dropped += len(batch)
            batch.segments = []
            if closed:
                batch.segments = [(LogStream.SYSTEM, [failure_note(writer)])]
        else:
            _apply_line_cap(writer, batch, closed)
        writer.next_number += len(batch)
        batch.line_count = writer.next_number - 1
        batch.finished = closed
        if writer.has_progress():
            if closed or time.monotonic() - writer.progress_written_at >= runlog_settings.PROGRESS_INTERVAL:
                batch.progress = writer.take_progress()
                writer.progress_written_at = time.monotonic()
            else:
                self._progress_waiting.add(writer)
        if not batch.segments and batch.progress is None and not batch.updates and not closed:
            return None
        return batch

    def _store(self, batches: list[tuple[LogWriter, Batch]]) -> None:
        """Store all batches together; if that fails, each alone, so one bad batch (or a
        database that stays away) costs only the runs it belongs to, and says so."""
        try:
            _store_with_retry([batch for _, batch in batches])
            return
        except Exception as exc:  # noqa: BLE001 - every failure is recorded on its runs
            if len(batches) == 1 or isinstance(exc, (OperationalError, InterfaceError)):
                # Only one run involved, or the database stayed away: no use trying again.
                for writer, batch in batches:
                    _stop_run(writer, exc, batch)
                return
        for writer, batch in batches:
            try:
                _store_with_retry([batch])
            except Exception as exc:  # noqa: BLE001 - recorded on its run
                _stop_run(writer, exc, batch)


def _apply_line_cap(writer: LogWriter, batch: Batch, closed: bool) -> None:
    """Past RUNLOG_MAX_LINES, store one marker line, then only count what the job prints.
    When the run ends, the marker says how many lines were not stored."""
    cap = runlog_settings.MAX_LINES
    if writer.truncated_at is not None:
        writer.dropped += len(batch)
        batch.segments = []
    elif batch.first_number + len(batch) - 1 > cap:
        room = cap - batch.first_number + 1
        kept: list[tuple[str, list[str]]] = []
        for stream, lines in batch.segments:
            if room <= 0:
                break
            kept.append((stream, lines[:room]))
            room -= len(kept[-1][1])
        writer.dropped += len(batch) - sum(len(lines) for _, lines in kept)
        writer.truncated_at = cap + 1
        kept.append((LogStream.SYSTEM, [_truncation_note(cap, None)]))
        batch.segments = kept
    if closed and writer.truncated_at is not None:
        batch.updates.append((writer.truncated_at, _truncation_note(cap, writer.dropped)))


def _truncation_note(cap: int, dropped: int | None) -> str:
    note = f"Log limit reached: only the first {cap:,} lines of this run are stored (RUNLOG_MAX_LINES)."
    if dropped is not None:
        note += f" {dropped:,} later lines were not stored."
    return note


def _stop_run(writer: LogWriter, exc: Exception, unstored: Batch | None = None) -> None:
    """A run's output could not be split or stored, for good: stop the run and count the
    `unstored` lines; its last line (stored once the database answers again) says how
    many were lost, and why, and its runner marks it failed."""
    logger.error("Runlog could not store the lines of job %s", writer.job_id, exc_info=exc)
    already_failed = writer.failure is not None
    if not already_failed:
        writer.failure = one_line(exc)
    if unstored is not None:
        if not already_failed:  # else the batch held only the note about the lost lines
            writer.dropped += len(unstored)
        writer.next_number = unstored.first_number  # nothing of this batch was stored
    # Nothing more can be stored once the run has ended: let its runner go on.
    if unstored.finished if unstored is not None else writer.closing:
        writer.done.set()
    if writer.control is not None:
        writer.control.storage_failed()


def failure_note(writer: LogWriter) -> str:
    return f"{writer.dropped:,} lines of this run could not be stored ({writer.failure}); the run was stopped."


def _store_with_retry(batches: list[Batch]) -> None:
    # The batches stay in memory while the database is away; the jobs block on their full
    # buffers meanwhile, so memory stays bounded.
    retrying(lambda: storage.store(batches), runlog_settings.DATABASE_RETRY_LIMIT, "store log lines")


flusher = Flusher()
