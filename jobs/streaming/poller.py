"""The process's poller: live lines and changes of runs that another process runs.

A run executed by a worker, by `manage.py runjob` or by another gunicorn worker stores its
lines in the database; its viewers here need them live. The poller reads the rows of such
runs that have a viewer here, in one query, fetches each run's new lines once, and
publishes them to the hub, where all the run's viewers share them: the database sees one
read per change, not one per viewer. It reads:

- on PostgreSQL (RUNLOG_NOTIFY), a run as soon as it is announced (jobs.logstore.notify),
  which the listener (jobs.streaming.listener) hears as it commits; a run when it gets its
  first viewer here; and every watched run when the listener starts listening, since what
  was announced before was not heard. While the listener listens, a run that prints
  nothing costs no query.
- otherwise (SQLite, or while the listener is not listening): every watched run, every
  POLL_INTERVAL.

With nothing to watch it waits on the hub's condition and costs nothing.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import fields
from functools import lru_cache
from typing import Any

from django.db import connection

from jobs.choices import JobStatus
from jobs.conf import runlog_settings
from jobs.logstore.hub import JobChanged, JobState, LiveHub, StoredLines, hub
from jobs.logstore.notify import Announcement
from jobs.models import Job, LogLine
from jobs.streaming.listener import Listener

logger = logging.getLogger(__name__)

#: Most lines fetched for one run per query; a run that printed more is fetched again at once.
FETCH_LIMIT = 5000

#: Least seconds between two reads: a run announcing every batch of a flood (hundreds a
#: second) is read in batches of announcements instead, each at most this late. A run with
#: a crowd of viewers here is read no more often than the crowd's rounds wake them
#: (jobs.logstore.hub.Crowd): what a read brings between two rounds waits for the next.
READ_GAP = 0.01

#: The columns of a run whose change its viewers must see: the run's id, then JobState's.
WATCHED_FIELDS = ("id", *(column.name for column in fields(JobState)))


class Poller:
    def __init__(self, hub: LiveHub) -> None:
        self._hub = hub
        # Per watched run: the last row seen (None: read, but it has no row), and how many
        # of its lines were published.
        self._seen: dict[uuid.UUID, JobState | None] = {}
        self._published: dict[uuid.UUID, int] = {}
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._listener = Listener(self._heard, self._listening_changed, self._still_watching)
        # Shared with the listener's thread, under the hub's watchers_changed:
        self._watched: set[uuid.UUID] = set()  # as of the poller's last look
        self._listening = False
        self._resync = False  # read every watched run: announcements were missed
        self._due: set[uuid.UUID] = set()  # runs announced, or with more lines to fetch
        # Runs whose output has ended, until their row says they have finished: their final
        # status is saved next by whatever runs them, and read every POLL_INTERVAL too, so
        # that their viewers' streams end even if nobody announces that save.
        self._ending: set[uuid.UUID] = set()
        self._next_poll = 0.0  # time.monotonic() of the next read of the polled runs
        self._not_before = 0.0  # ... and of any read

    def ensure_started(self) -> None:
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="runlog-poller", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            with self._hub.watchers_changed:
                runs, wait = self._next_read()
                if wait is None or wait > 0:
                    self._hub.watchers_changed.wait(wait)
                    continue
                self._taken(runs)
            try:
                behind = self.poll(runs)
            except Exception:  # the poller must outlive any failure: the runs are read again later
                logger.warning("Runlog poller could not read runs of other processes", exc_info=True)
                connection.close()  # a connection that failed (the database restarted) is not used again
                with self._hub.watchers_changed:
                    self._due |= runs & self._watched
                    self._not_before = time.monotonic() + runlog_settings.POLL_INTERVAL
                continue
            ended = {job_id for job_id in runs if (state := self._seen.get(job_id)) and _finished(state)}
            with self._hub.watchers_changed:
                self._due |= behind & self._watched
                self._ending -= ended

    def _next_read(self) -> tuple[set[uuid.UUID], float | None]:
        """The runs to read next, and the seconds to wait before (None: until woken). The
        caller holds watchers_changed."""
        watched = self._hub.remote_jobs()
        self._forget_unwatched(watched)
        if not watched:
            return set(), None
        if runlog_settings.NOTIFY and connection.vendor == "postgresql":
            self._listener.want()
        now = time.monotonic()
        polled = self._ending if self._listening else watched
        if self._resync:
            runs = set(watched)
        else:
            runs = set(self._due)
            if self._listening:
                runs |= watched - self._seen.keys()
            if polled and now >= self._next_poll:
                runs |= polled
        if runs:
            return runs, max(0.0, self._not_before - now)
        return runs, self._next_poll - now if polled else None

    def _taken(self, runs: set[uuid.UUID]) -> None:
        """`runs` are read now. The caller holds watchers_changed."""
        now = time.monotonic()
        if (self._ending if self._listening else self._watched) <= runs:
            self._next_poll = now + runlog_settings.POLL_INTERVAL
        self._not_before = now + max(READ_GAP, self._hub.round_gap(runs))
        self._due -= runs
        self._resync = False

    def _forget_unwatched(self, watched: set[uuid.UUID]) -> None:
        self._watched = watched
        for job_id in self._seen.keys() - watched:
            del self._seen[job_id]
            self._published.pop(job_id, None)
        self._due &= watched
        self._ending &= watched
        if not watched:
            connection.close()  # nothing to watch: give the connection back

    # --- Called by the listener's thread ------------------------------------------------------

    def _heard(self, announcement: Announcement) -> None:
        with self._hub.watchers_changed:
            if announcement.job_id in self._watched:
                self._due.add(announcement.job_id)
                if announcement.output_ended:
                    self._ending.add(announcement.job_id)
                self._hub.watchers_changed.notify_all()

    def _listening_changed(self, listening: bool) -> None:
        with self._hub.watchers_changed:
            self._listening = listening
            if listening:
                self._resync = True
            else:
                self._next_poll = 0.0  # poll from now on, starting at once
            self._hub.watchers_changed.notify_all()

    def _still_watching(self) -> bool:
        with self._hub.watchers_changed:
            if self._hub.remote_jobs():
                return True
            self._hub.watchers_changed.notify_all()  # so that the poller gives its connection back
            return False

    # --- Reading ----------------------------------------------------------------------------------

    def poll(self, runs: set[uuid.UUID]) -> set[uuid.UUID]:
        """Read `runs` and publish what changed; the runs that have more new lines than one
        fetch took."""
        behind = set()
        sql, params = _states_query(frozenset(runs))
        read_started = time.monotonic()
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            rows = cursor.fetchall()
        read_at = time.monotonic()
        for job_id in runs:
            self._seen.setdefault(job_id, None)  # read, even if it has no row
        for raw_id, *columns in rows:
            job_id = raw_id if isinstance(raw_id, uuid.UUID) else uuid.UUID(raw_id)  # SQLite: hex text
            state = JobState(*columns)
            if job_id not in self._published:
                # First sight: its viewers read the database up to now themselves.
                self._published[job_id] = state.line_count
            elif state.line_count > self._published[job_id] and self._publish_lines(job_id, state.line_count):
                # More lines than one fetch: the change waits until they are all published,
                # so that its viewers do not each read the rest themselves (jobs.streaming.follow).
                behind.add(job_id)
                continue
            if self._seen[job_id] != state and self._hub.publish_read(JobChanged(job_id, state, read_started, read_at)):
                self._seen[job_id] = state
        return behind

    def _publish_lines(self, job_id: uuid.UUID, line_count: int) -> bool:
        """Publish the run's new lines; whether it has more than this fetch brought."""
        after = self._published[job_id]
        rows = LogLine.objects.rows_after(job_id, after, FETCH_LIMIT)
        if not rows:
            return False
        if not self._hub.publish_read(StoredLines(job_id, rows)):
            return False
        self._published[job_id] = rows[-1][0]
        return rows[-1][0] < line_count


def _finished(state: JobState) -> bool:
    return state.status in JobStatus.finished_values()


@lru_cache(maxsize=64)
def _states_query(runs: frozenset[uuid.UUID]) -> tuple[str, tuple[Any, ...]]:
    """The SQL of a read, written by the ORM once per set of runs read: writing it costs
    several times what running it does, and the poller may read 1 / READ_GAP times a second."""
    return Job.objects.filter(pk__in=runs).values_list(*WATCHED_FIELDS).query.sql_with_params()


poller = Poller(hub)
