"""One regular-expression search of a SQLite database, in a process of its own.

jobs.streaming.search starts this file with `python -I` (the standard library only), writes
a JSON request on its stdin: {"database": path, "sql": a SELECT of line numbers in order
with `?` placeholders, "params": [...] whose last two are the bounds of a range of line
numbers, "flags": Python's re flags, and "after", "upto", "wanted", "seconds" and
"first_lines" for jobs/streaming/scan.py}, and reads {"numbers": the matching lines,
"searched": the last line searched} as JSON on its stdout. The query's REGEXP is Python's re, as in the server
(Django registers the same function), but here a pattern that never ends only costs this
process, which the server kills at its time limit.
"""

from __future__ import annotations

import functools
import importlib.util
import itertools
import json
import re
import sqlite3
import sys
from pathlib import Path
from types import ModuleType


def load_scan() -> ModuleType:
    """jobs/streaming/scan.py, beside this file: -I leaves this directory off the path."""
    spec = importlib.util.spec_from_file_location("scan", Path(__file__).with_name("scan.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
        sql, params = request["sql"], request["params"][:-2]

        def search_range(start: int, end: int, count: int) -> list[int]:
            rows = database.execute(sql, [*params, start, end])
            try:
                return [number for (number,) in itertools.islice(rows, count)]
            finally:
                rows.close()

        numbers, searched = load_scan().scan(
            search_range,
            request["after"],
            request["upto"],
            request["wanted"],
            request["seconds"],
            request["first_lines"],
        )
    finally:
        database.close()
    json.dump({"numbers": numbers, "searched": searched}, sys.stdout)


if __name__ == "__main__":
    main()
