"""The test settings' database backends: the production ones, but faster to empty between
transactional tests.

After each `transaction=True` test Django empties every table, then re-creates the content
types and permissions for every app (its post_migrate signal), which costs more than the
emptying. The backends keep those two tables, which hold only what post_migrate would write
back, so that it finds everything in place and writes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable

#: Tables that a flush leaves as they are.
KEPT_BY_FLUSH = frozenset({"django_content_type", "auth_permission"})


def flushed(tables: Iterable[str]) -> list[str]:
    return [table for table in tables if table not in KEPT_BY_FLUSH]
