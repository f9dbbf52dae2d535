"""One regular-expression search of a SQLite database, in a process of its own.

jobs.streaming.search starts this file with `python -I` (the standard library only), writes
a JSON request on its stdin: {"database": path, "sql": a SELECT of line numbers with `?`
placeholders, "params": [...], "flags": Python's re flags}, and reads the numbers of the
matching lines as a JSON list on its stdout. The query's REGEXP is Python's re, as in the
server (Django registers the same function), but here a pattern that never ends only costs
this process, which the server kills at its time limit.
"""

from __future__ import annotations

import functools
import json
import re
import sqlite3
import sys


def main() -> None:
    request = json.load(sys.stdin)
    flags = request["flags"]

    @functools.lru_cache(maxsize=4)
    def compiled(pattern: str) -> re.Pattern[str]:
        return re.compile(pattern, flags)

    def regexp(pattern: str, text: str | None) -> bool:
        return text is not None and compiled(pattern).search(text) is not None

    database = sqlite3.connect(request["database"], timeout=30)
    try:
        database.execute("PRAGMA query_only = ON")
        database.create_function("regexp", 2, regexp, deterministic=True)
        numbers = [number for (number,) in database.execute(request["sql"], request["params"])]
    finally:
        database.close()
    json.dump(numbers, sys.stdout)


if __name__ == "__main__":
    main()
