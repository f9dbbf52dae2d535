"""PostgreSQL as in production, but emptied with DELETE between transactional tests (its
content types and permissions kept: tests.backends).

Django empties the tables after each `transaction=True` test with one TRUNCATE, which
gives every table new files: far slower than deleting the few rows a test leaves. Its
foreign keys are deferred, so the tables can be emptied in any order within the flush's
transaction.
"""

from __future__ import annotations

from typing import Any

from django.db.backends.postgresql import base, operations

from tests.backends import flushed


class DatabaseOperations(operations.DatabaseOperations):
    def sql_flush(self, style: Any, tables: Any, *, reset_sequences: bool = False, allow_cascade: bool = False) -> Any:
        tables = flushed(tables)
        if not tables or reset_sequences or allow_cascade:
            return super().sql_flush(style, tables, reset_sequences=reset_sequences, allow_cascade=allow_cascade)
        return ["SET CONSTRAINTS ALL DEFERRED;"] + [
            f"{style.SQL_KEYWORD('DELETE')} {style.SQL_KEYWORD('FROM')} {style.SQL_FIELD(self.quote_name(table))};"
            for table in tables
        ]


class DatabaseWrapper(base.DatabaseWrapper):
    ops_class = DatabaseOperations
