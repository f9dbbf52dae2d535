"""Retrying a database call while the database is unreachable (a restart, a network blip)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from django.db import DatabaseError, InterfaceError, OperationalError, connection

logger = logging.getLogger(__name__)

Result = TypeVar("Result")


def retrying(call: Callable[[], Result], limit: float, what: str) -> Result:
    """Run `call`, retrying with backoff on connection errors for up to `limit` seconds.

    Each retry starts on a fresh connection. Past the limit the last error is raised.
    """
    deadline = time.monotonic() + limit
    delay = 0.05
    while True:
        try:
            return call()
        except (OperationalError, InterfaceError) as exc:
            if time.monotonic() + delay > deadline:
                raise
            logger.warning("Runlog could not %s (%s); retrying in %.2f s", what, exc, delay)
            try:
                connection.close()
            except DatabaseError:
                pass
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


def one_line(exc: BaseException) -> str:
    """An exception as one line, for Job.error and log lines: drivers' messages can span
    several (psycopg's do)."""
    return " ".join(f"{type(exc).__name__}: {exc}".split())
