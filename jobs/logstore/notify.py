"""Announcing, on PostgreSQL, that a run stored lines or changed, to every process that
watches it (jobs.streaming.listener): `NOTIFY` on one channel, with the run's id and its
line count as the payload.

PostgreSQL delivers a notification when the transaction that sent it commits, and only
then: a listener that reads the run after hearing of it sees the change. On other
databases there is no one to tell and announcing does nothing: their viewers poll.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import NamedTuple

from django.db import DEFAULT_DB_ALIAS, connections

#: The channel of every announcement.
CHANNEL = "runlog_runs"
#: The payload's last word when the run's output has ended (its final status comes next).
_OUTPUT_ENDED = "ended"


class Announcement(NamedTuple):
    job_id: uuid.UUID
    #: The lines the run has stored.
    line_count: int
    #: The run's last lines are stored: its final status is saved next, by whatever runs it.
    output_ended: bool = False

    def payload(self) -> str:
        return f"{self.job_id} {self.line_count}" + (f" {_OUTPUT_ENDED}" if self.output_ended else "")

    @classmethod
    def parse(cls, payload: str) -> Announcement | None:
        """The announcement of `payload`, or None if it is not one."""
        words = payload.split(" ")
        try:
            if len(words) == 2:
                return cls(uuid.UUID(words[0]), int(words[1]))
            if len(words) == 3 and words[2] == _OUTPUT_ENDED:
                return cls(uuid.UUID(words[0]), int(words[1]), output_ended=True)
        except ValueError:
            pass
        return None


def announce(job_id: uuid.UUID, line_count: int, using: str = DEFAULT_DB_ALIAS) -> None:
    """Tell the processes that watch the run that its row or its lines changed. Call it
    in the transaction of any change of its status, error, cancel request or progress (or
    right after it commits); `line_count` is the number of lines it has stored."""
    announce_all([Announcement(job_id, line_count)], using)


def announce_all(announcements: Iterable[Announcement], using: str = DEFAULT_DB_ALIAS) -> None:
    """Several announcements in one round trip."""
    connection = connections[using]
    if connection.vendor != "postgresql":
        return
    payloads = [announcement.payload() for announcement in announcements]
    with connection.cursor() as cursor:
        # pg_notify rather than NOTIFY: the channel and payloads are parameters.
        cursor.execute("SELECT pg_notify(%s, payload) FROM unnest(%s::text[]) AS payload", [CHANNEL, payloads])
