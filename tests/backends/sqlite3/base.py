"""SQLite as in production, but its content types and permissions kept when it is emptied
between transactional tests (tests.backends)."""

from __future__ import annotations

from typing import Any

from django.db.backends.sqlite3 import base, operations

from tests.backends import flushed


class DatabaseOperations(operations.DatabaseOperations):
    def sql_flush(self, style: Any, tables: Any, *, reset_sequences: bool = False, allow_cascade: bool = False) -> Any:
        return super().sql_flush(style, flushed(tables), reset_sequences=reset_sequences, allow_cascade=allow_cascade)


class DatabaseWrapper(base.DatabaseWrapper):
    ops_class = DatabaseOperations
