"""The process's listener: on PostgreSQL, hears the announcements of runs' changes
(jobs.logstore.notify) the moment they commit, on one connection of its own.

The poller starts it when it first has runs to watch and hands each announcement to the
poller, which reads the run at once. The connection is not one of Django's: it stays in
LISTEN for as long as the process watches runs, and is closed once it has watched none
for a while. While it is not listening (connecting, or reconnecting after losing the
connection, with backoff) the poller polls, and when it listens again the poller reads
every watched run once: announcements made meanwhile were not heard.

An idle listener sends nothing to the database: TCP keepalives tell it that the connection
is still there, and a lost connection makes it reconnect.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
from django.db import DEFAULT_DB_ALIAS, connections
from psycopg import sql

from jobs.logstore.dbretry import one_line
from jobs.logstore.notify import CHANNEL, Announcement

logger = logging.getLogger(__name__)

#: Seconds between the listener's checks that it is still wanted (no query: it only
#: stops waiting for announcements for a moment).
IDLE_CHECK = 10.0
#: Seconds before reconnecting after the connection failed: doubled on each failure in a
#: row, up to the most.
RECONNECT_DELAY = 0.1
RECONNECT_DELAY_MAX = 5.0
#: libpq's TCP keepalives for the listener's connection, unless the database's OPTIONS
#: set them: a connection whose peer went away silently is noticed within about 25 s.
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3}


class Listener:
    def __init__(
        self,
        heard: Callable[[Announcement], None],
        listening: Callable[[bool], None],
        wanted: Callable[[], bool],
    ) -> None:
        """`heard` gets each announcement; `listening(True)` is called once LISTEN is in
        place (announcements committed from then on are heard), `listening(False)` once it
        is not; `wanted()` says whether there still are runs to watch."""
        self._heard = heard
        self._listening = listening
        self._wanted = wanted
        self._demand = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def want(self) -> None:
        """Listen from now on (the poller has runs to watch)."""
        self._demand.set()
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="runlog-listener", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        delay = RECONNECT_DELAY
        while True:
            self._demand.wait()
            if not self._still_wanted():
                continue
            try:
                self._listen()
                delay = RECONNECT_DELAY
                continue
            except psycopg.Error as exc:
                logger.warning("Runlog listener lost its connection (%s); reconnecting in %.1f s", one_line(exc), delay)
            except Exception:  # the listener must outlive any failure; the poller polls meanwhile
                logger.exception("Runlog listener failed; reconnecting in %.1f s", delay)
            time.sleep(delay)
            delay = min(delay * 2, RECONNECT_DELAY_MAX)

    def _listen(self) -> None:
        """Hear announcements until no run is watched any more."""
        with psycopg.connect(**self._connection_params()) as connection:
            connection.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CHANNEL)))
            self._listening(True)
            try:
                while True:
                    for notify in connection.notifies(timeout=IDLE_CHECK):
                        announcement = Announcement.parse(notify.payload)
                        if announcement is not None:
                            self._heard(announcement)
                    if not self._still_wanted():
                        return
            finally:
                self._listening(False)

    def _still_wanted(self) -> bool:
        """Whether there still are runs to watch; if not, listen again only once want() is
        called again."""
        if self._wanted():
            return True
        self._demand.clear()
        return self._wanted()  # want() may have come in between

    def _connection_params(self) -> dict[str, Any]:
        """Django's parameters for the database (host, name, user, OPTIONS...), in
        autocommit, so that LISTEN takes effect at once."""
        params = connections[DEFAULT_DB_ALIAS].get_connection_params()
        return {**KEEPALIVES, **params, "autocommit": True}
