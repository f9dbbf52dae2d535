"""A search of a run's lines range after range, in line order, that stops as soon as it has
found enough matches or spent its time, and says how far it got.

The standard library only: SQLite's regex child (sqlite_regex.py) loads this file too.
"""

from __future__ import annotations

import time
from collections.abc import Callable

#: Lines of the first range: small, so that a common text is answered in milliseconds.
FIRST_LINES = 20_000


def scan(
    search_range: Callable[[int, int, int], list[int]],
    after: int,
    upto: int,
    wanted: int,
    seconds: float,
    first_lines: int = FIRST_LINES,
) -> tuple[list[int], int]:
    """The first `wanted` matches in after+1..upto, in order, and the last line searched:
    the matches are every match up to it. `search_range(start, end, n)` answers the first
    n matches in start+1..end. The ranges after the first are as long as the rate so far
    reaches in what is left of `seconds`, so an answer takes about that long, however
    fast the database is, unless one range is far slower than the ones before it."""
    started = time.monotonic()
    numbers: list[int] = []
    searched, lines = after, first_lines
    while searched < upto:
        end = min(upto, searched + lines)
        numbers += search_range(searched, end, wanted - len(numbers))
        if len(numbers) >= wanted:
            # The range went on past the last match; what is known is up to it.
            return numbers, numbers[-1]
        searched = end
        elapsed = time.monotonic() - started
        if elapsed >= seconds:
            break
        lines = max(first_lines, int((searched - after) / max(elapsed, 1e-6) * (seconds - elapsed)))
    return numbers, searched
