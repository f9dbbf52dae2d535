"""Search a run's stored lines: the numbers of the lines after a given one that contain a
text, or match a regular expression, in order.

The database does the scan, so that the lines of a long run never come into Python:
- a text is found with the database's substring search (strpos / instr). Ignoring case, an
  ASCII text is compared with lower() under the "C" collation, which folds ASCII letters
  only and is several times faster on PostgreSQL than its locale's folding; other texts
  fold as PostgreSQL's locale does, or as Python's re does on SQLite;
- a regular expression is written in Python's syntax and checked with `re`. PostgreSQL
  runs it with its own engine (the same syntax for what logs are searched with; Python's
  \\b and \\B are translated, and what PostgreSQL refuses is a SearchError). SQLite runs
  it with Python's re in a child process (jobs/streaming/sqlite_regex.py): one re match holds
  the GIL from start to end, so a catastrophic pattern in the server would freeze its
  every thread, the running jobs included; a child can be killed;
- a regular expression's longest required text (one every match contains) is looked for
  first with the substring search, which is far cheaper than the regex engine and leaves
  it few lines.

An answer searches range after range of lines in order (jobs/streaming/scan.py) and stops
when it has `limit` matches or after about ANSWER_SECONDS, saying up to which line it
searched: a client asks again from there for more. So a text found early is answered at
once, and a search of a long run that finds little is answered in steps, none much longer
than ANSWER_SECONDS, rather than in one long wait.

Every answer ends within TIME_LIMIT seconds (PostgreSQL's statement_timeout, SQLite's
progress handler, the child's kill); one that would take longer is a SearchError.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from re import _constants as sre_constants  # type: ignore[attr-defined]  # re's own parser, to read a pattern
from re import _parser as sre_parser  # type: ignore[attr-defined]
from typing import Any

from django.db import DatabaseError, connection, transaction
from django.db.models import BooleanField, QuerySet
from django.db.models.expressions import RawSQL

from jobs.models import Job, LogLine, column_of
from jobs.streaming import scan

#: Longest search text accepted: a bound on the work of compiling a pattern.
MAX_QUERY_LENGTH = 1000
#: Matches per answer by default, and at most.
DEFAULT_MATCHES = 1000
MAX_MATCHES = 10_000
#: Seconds an answer searches for, about, before it answers what it has found so far.
ANSWER_SECONDS = 0.5
#: Seconds an answer may take.
TIME_LIMIT = 10.0
#: Shortest required text worth a substring search before the regex engine.
MIN_PREFILTER = 2
#: Most alternatives of a required text looked for (each is one more substring search).
MAX_ALTERNATIVES = 8

#: ASCII letters that Python's re, ignoring case, also finds as a non-ASCII letter (İ and ı,
#: ſ, the Kelvin sign): a search that folds ASCII only must not rely on them. PostgreSQL's
#: engine folds them to ASCII only.
_FOLDS_BEYOND_ASCII = frozenset("iIkKsS")
_REPEATS = (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT, sre_constants.POSSESSIVE_REPEAT)
_CHILD = Path(__file__).with_name("sqlite_regex.py")
#: SQLite's progress handler runs every this many virtual machine instructions.
_PROGRESS_STEPS = 10_000


class SearchError(ValueError):
    """A search that cannot be run as asked; the message says why, for a 400."""


@dataclass(frozen=True)
class Query:
    text: str
    regex: bool
    case_sensitive: bool
    #: Python's re flags of a regex (case, and any flags it sets itself).
    flags: int


@dataclass(frozen=True)
class Found:
    #: Every matching line in after+1..searched, in order.
    numbers: list[int]
    #: Whether lines after `searched` (up to the run's line_count) may match: ask again
    #: with after=searched.
    more: bool
    searched: int


def make_query(text: str, *, regex: bool, case_sensitive: bool) -> Query:
    """Check the search text (and compile a regex) before anything reaches the database."""
    if text == "":
        raise SearchError("q is empty: give the text to search for.")
    if len(text) > MAX_QUERY_LENGTH:
        raise SearchError(f"q is longer than {MAX_QUERY_LENGTH:,} characters.")
    if "\x00" in text:
        raise SearchError("q contains a NUL character, which no stored line has.")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise SearchError("q is not valid Unicode text (it has a lone surrogate).") from exc
    flags = 0 if case_sensitive else re.IGNORECASE
    if not regex:
        return Query(text, regex, case_sensitive, flags)
    try:
        compiled = re.compile(text, flags)
    except re.error as exc:
        raise SearchError(f"q is not a valid regular expression: {exc}.") from exc
    except (RecursionError, OverflowError) as exc:
        raise SearchError("q is too complex a regular expression.") from exc
    return Query(text, regex, case_sensitive, compiled.flags)


def find(job: Job, query: Query, after: int, limit: int) -> Found:
    """The matches of the query among the stored lines of `job` after line `after` (up to
    its line_count), in order: the first `limit` of them, or those found in about
    ANSWER_SECONDS, and the last line searched."""
    upto = job.line_count
    if after >= upto:
        return Found([], False, after)
    vendor = connection.vendor
    matches, prefilter = _condition(vendor, query)
    lines = _lines_where(job, _with_prefilter(matches, prefilter))
    wanted = limit + 1  # one more than asked: whether it exists is `more`
    if vendor == "postgresql":
        unfiltered = None if prefilter is None else Unfiltered(_lines_where(job, prefilter), _lines_where(job, matches))
        numbers, searched = _on_postgresql(lines, after, upto, wanted, unfiltered)
    elif query.regex:
        numbers, searched = _in_child(lines, after, upto, wanted, query.flags)
    else:
        numbers, searched = _on_sqlite(lines, after, upto, wanted)
    if len(numbers) > limit:
        return Found(numbers[:limit], True, numbers[limit] - 1)
    return Found(numbers, searched < upto, searched)


# --- What the database tests -------------------------------------------------------------------


#: An SQL condition on a line and its parameters.
Condition = tuple[str, list[Any]]


def _condition(vendor: str, query: Query) -> tuple[Condition, Condition | None]:
    """The SQL condition on a line's text; for a regex with required texts, also the
    substring search for them (every matching line passes it)."""
    column = connection.ops.quote_name(column_of(LogLine, "text"))
    if not query.regex:
        return _contains(vendor, column, query.text, query.case_sensitive), None
    ignore_case = bool(query.flags & re.IGNORECASE)
    if vendor == "postgresql":
        matches = (f"{column} {'~*' if ignore_case else '~'} %s", [postgresql_pattern(query.text)])
    else:
        matches = (f"{column} REGEXP %s", [query.text])  # the child compiles it with the flags
    required = sorted(required_texts(query.text, query.flags, folds_beyond_ascii=vendor != "postgresql"))
    if not required:
        return matches, None
    either = [_contains(vendor, column, text, not ignore_case) for text in required]
    return matches, (" OR ".join(sql for sql, _ in either), [param for _, params in either for param in params])


def _with_prefilter(matches: Condition, prefilter: Condition | None) -> Condition:
    if prefilter is None:
        return matches
    # CASE, not AND: PostgreSQL orders ANDed conditions by its cost estimates, which rate
    # a regex as cheap as a substring search, and would run the regex on every line.
    return f"CASE WHEN {prefilter[0]} THEN {matches[0]} ELSE FALSE END", prefilter[1] + matches[1]


def _lines_where(job: Job, condition: Condition) -> QuerySet[LogLine, int]:
    """The numbers of the run's lines that meet `condition`."""
    sql, params = condition
    # Only the quoted column name is formatted into `sql`; every value is a parameter.
    found = RawSQL(sql, params, output_field=BooleanField())  # noqa: S611
    return LogLine.objects.filter(found, job_id=job.id).values_list("number", flat=True).order_by()


def _contains(vendor: str, column: str, text: str, case_sensitive: bool) -> Condition:
    find_text = "strpos" if vendor == "postgresql" else "instr"
    if case_sensitive:
        return f"{find_text}({column}, %s) > 0", [text]
    if text.isascii():
        # SQLite's lower() folds ASCII letters only, as PostgreSQL's does under "C".
        collate = ' COLLATE "C"' if vendor == "postgresql" else ""
        return f"{find_text}(lower({column}{collate}), %s) > 0", [text.lower()]
    if vendor == "postgresql":
        return f"strpos(lower({column}), lower(%s)) > 0", [text]
    # Django's REGEXP function; an escaped text is a pattern that cannot backtrack.
    return f"{column} REGEXP %s", [f"(?i){re.escape(text)}"]


def required_texts(pattern: str, flags: int, *, folds_beyond_ascii: bool = True) -> frozenset[str]:
    """Texts of which every match of `pattern` contains at least one (none if nothing
    selective is known): the most selective of the runs of text the pattern spells out at
    its top level or in a plain group there, where a run may branch into a few
    alternatives (`err(or|no)`) and counts repeats (`0{4}`). Ignoring case, only ASCII
    characters are kept, so that an ASCII-folding substring search finds every line the
    pattern matches; for a regex engine that folds i, k and s to non-ASCII letters too
    (Python's re: İ, ı, ſ, the Kelvin sign), not those either."""
    parsed = sre_parser.parse(pattern, flags)
    folds = (
        None if not parsed.state.flags & re.IGNORECASE else _FOLDS_BEYOND_ASCII if folds_beyond_ascii else frozenset()
    )
    found = _required(list(parsed), folds)
    return found if min(map(len, found), default=0) >= MIN_PREFILTER else frozenset()


def _required(items: list[tuple[Any, Any]], folds: frozenset[str] | None) -> frozenset[str]:
    """The best set of `items` (a sequence) of which each match contains one member."""
    candidates: list[frozenset[str]] = []
    run = frozenset({""})
    for op, value in items:
        alone = _spelled([(op, value)], folds)
        longer = _product(run, alone)
        if longer is not None or alone is not None:
            if longer is None:  # too many alternatives together: a new run starts here
                candidates.append(run)
            run = longer or alone or run
            continue
        candidates.append(run)
        run = frozenset({""})
        if op in _REPEATS and value[0] >= 1:
            # x{2,}y: a match holds what came before and "xx", and its last x is followed by y.
            once = _spelled(list(value[2]), folds)
            candidates.append(_product(candidates[-1], _power(once, value[0])) or frozenset())
            run = once or run
        elif op is sre_constants.SUBPATTERN and not value[1] and not value[2]:
            candidates.append(_required(list(value[3]), folds))
        elif op is sre_constants.BRANCH:
            either = [_required(list(branch), folds) for branch in value[1]]
            if all(either):
                candidates.append(_limited(frozenset().union(*either)) or frozenset())
    candidates.append(run)
    return max(candidates, key=lambda texts: (min(map(len, texts), default=0), -len(texts)))


def _spelled(items: list[tuple[Any, Any]], folds: frozenset[str] | None) -> frozenset[str] | None:
    """Every text that `items` match, if they match only a few (None otherwise)."""
    texts: frozenset[str] | None = frozenset({""})
    for op, value in items:
        if texts is None:
            return None
        if op is sre_constants.LITERAL:
            one = frozenset({chr(value)}) if _foldable(chr(value), folds) else None
        elif op is sre_constants.IN and all(kind is sre_constants.LITERAL for kind, _ in value):
            chars = {chr(code).lower() if folds is not None else chr(code) for _, code in value}
            one = frozenset(chars) if all(_foldable(char, folds) for char in chars) else None
        elif op is sre_constants.SUBPATTERN and not value[1] and not value[2]:
            one = _spelled(list(value[3]), folds)
        elif op is sre_constants.BRANCH:
            either = [_spelled(list(branch), folds) for branch in value[1]]
            one = None if None in either else _limited(frozenset().union(*either))  # type: ignore[arg-type]
        elif op in _REPEATS and value[0] == value[1]:
            one = _power(_spelled(list(value[2]), folds), value[0])
        elif op is sre_constants.AT:
            one = frozenset({""})  # an anchor matches no text
        else:
            return None
        texts = _product(texts, one)
    return texts


def _product(first: frozenset[str], then: frozenset[str] | None) -> frozenset[str] | None:
    return None if then is None else _limited(frozenset(a + b for a in first for b in then))


def _power(texts: frozenset[str] | None, count: int) -> frozenset[str] | None:
    result: frozenset[str] | None = frozenset({""})
    for _ in range(min(count, MAX_QUERY_LENGTH)):
        if result is None:
            break
        result = _product(result, texts)
    return result


def _limited(texts: frozenset[str]) -> frozenset[str] | None:
    return texts if len(texts) <= MAX_ALTERNATIVES else None


def _foldable(char: str, folds: frozenset[str] | None) -> bool:
    """Whether a required text may hold `char`: `folds` are the ASCII letters the engine
    folds to non-ASCII ones when it ignores case (None: it does not ignore case)."""
    return folds is None or (char.isascii() and char not in folds)


def postgresql_pattern(pattern: str) -> str:
    """A Python pattern in PostgreSQL's spelling: \\b and \\B (word boundaries in Python,
    a backspace and an error in PostgreSQL) are \\y and \\Y there. Inside brackets, \\b is
    a backspace in both."""
    out: list[str] = []
    index, in_brackets = 0, False
    while index < len(pattern):
        char = pattern[index]
        if char == "\\" and index + 1 < len(pattern):
            escaped = pattern[index + 1]
            out.append({"b": "\\y", "B": "\\Y"}.get(escaped, char + escaped) if not in_brackets else char + escaped)
            index += 2
            continue
        if in_brackets:
            in_brackets = char != "]"
        elif char == "[":
            # A "]" right after "[" or "[^" is a member, not the end.
            end = index + 1 + (pattern.startswith("^", index + 1))
            end += pattern.startswith("]", end)
            out.append(pattern[index:end])
            index, in_brackets = end, True
            continue
        out.append(char)
        index += 1
    return "".join(out)


# --- Running it, in bounded time ---------------------------------------------------------------


def _too_slow() -> SearchError:
    return SearchError(
        f"The search took longer than {TIME_LIMIT:g} s and was stopped: search for a longer text or a simpler pattern."
    )


@dataclass(frozen=True)
class Unfiltered:
    """A regex search's lines without its substring search first: those that pass that
    search, and those that match the regex alone."""

    passing: QuerySet[LogLine, int]
    matching: QuerySet[LogLine, int]


def _on_postgresql(
    lines: QuerySet[LogLine, int], after: int, upto: int, wanted: int, unfiltered: Unfiltered | None
) -> tuple[list[int], int]:
    """The scan of after+1..upto, each range in one query, because the planner cannot know
    how many lines a search finds (it guesses a third, or a half):
    - the first range is read in order along the (job, number) index, which stops as soon
      as it has found enough: a common text is answered there, in milliseconds;
    - a later one is read whole, in parallel, its matches then sorted. Asked with ORDER BY
      and LIMIT, the planner expects to stop early and reads it along the index in one
      process. Expecting a third of the lines to match, it would not read in parallel
      either (passing rows between processes has a cost): a search's rows are few, so
      that cost is made small for this transaction. It also rates the test of a line as
      cheap, where a regex takes microseconds, and so starts workers only for ranges far
      longer than one answer's: starting them is made cheap too. A sequential scan would
      read every run's lines to find one range's: the index bounds each range.
    On a large table the regex's cost estimate would also have PostgreSQL compile the query
    to machine code first (JIT): a few hundred milliseconds that cannot speed up the regex
    engine, where a search's time goes.
    A substring search before a regex saves its time when few lines pass it, and adds to it
    when most do (each line is lowered first): when most lines of the first range pass it,
    the later ranges run the regex alone."""
    column = connection.ops.quote_name(column_of(LogLine, "number"))
    with transaction.atomic(), connection.cursor() as cursor:
        milliseconds = max(1, round(TIME_LIMIT * 1000))  # 0 would mean no limit
        cursor.execute(
            "SELECT set_config('statement_timeout', %s, true), set_config('parallel_tuple_cost', '0.001', true),"
            " set_config('parallel_setup_cost', '10', true), set_config('min_parallel_table_scan_size', '0', true),"
            " set_config('jit', 'off', true), set_config('enable_seqscan', 'off', true)",
            [str(milliseconds)],
        )

        later = lines

        def search_range(start: int, end: int, count: int) -> list[int]:
            nonlocal later
            if start == after:
                found = _first_in_order(lines, start, end, count)
                if unfiltered is not None and len(found) < count and _most_pass(unfiltered.passing, start, end):
                    later = unfiltered.matching
                return found
            sql, params = later.filter(number__gt=start, number__lte=end).query.sql_with_params()
            # OFFSET 0 keeps the planner from pushing ORDER BY and LIMIT into the scan.
            cursor.execute(
                f"SELECT {column} FROM ({sql} OFFSET 0) AS found ORDER BY {column} LIMIT %s",  # noqa: S608
                [*params, count],
            )
            return [number for (number,) in cursor.fetchall()]

        try:
            return scan.scan(search_range, after, upto, wanted, ANSWER_SECONDS, scan.FIRST_LINES)
        except DatabaseError as exc:
            sqlstate = getattr(exc.__cause__, "sqlstate", None) or ""
            if sqlstate == "57014":  # query_canceled: the statement timeout
                raise _too_slow() from exc
            if sqlstate == "2201B" or sqlstate.startswith("54"):  # invalid regex, or too complex
                message = getattr(getattr(exc.__cause__, "diag", None), "message_primary", None) or str(exc)
                raise SearchError(f"PostgreSQL cannot run this pattern: {message}.") from exc
            raise


def _most_pass(passing: QuerySet[LogLine, int], start: int, end: int) -> bool:
    """Whether most of the lines start+1..end (a run's lines are numbered without a gap)
    pass a substring search."""
    return passing.filter(number__gt=start, number__lte=end).count() * 2 > end - start


def _first_in_order(lines: QuerySet[LogLine, int], start: int, end: int, count: int) -> list[int]:
    """The first `count` numbers of `lines` in start+1..end, read in order along the index."""
    return list(lines.filter(number__gt=start, number__lte=end).order_by("number")[:count])


def _on_sqlite(lines: QuerySet[LogLine, int], after: int, upto: int, wanted: int) -> tuple[list[int], int]:
    connection.ensure_connection()
    database = connection.connection
    deadline = time.monotonic() + TIME_LIMIT
    expired = False

    def past_deadline() -> bool:
        nonlocal expired
        expired = time.monotonic() > deadline
        return expired  # true interrupts the statement

    database.set_progress_handler(past_deadline, _PROGRESS_STEPS)
    try:
        return scan.scan(partial(_first_in_order, lines), after, upto, wanted, ANSWER_SECONDS, scan.FIRST_LINES)
    except DatabaseError as exc:
        if expired:
            raise _too_slow() from exc
        raise
    finally:
        database.set_progress_handler(None, 0)


def _in_child(lines: QuerySet[LogLine, int], after: int, upto: int, wanted: int, flags: int) -> tuple[list[int], int]:
    # The range's bounds are the query's last two parameters (its last filter's, in this
    # order): the child sets them for each range.
    ranged = lines.filter(number__gt=after, number__lte=upto).order_by("number")
    sql, params = ranged.query.sql_with_params()
    request = {
        "database": str(connection.settings_dict["NAME"]),
        "sql": sql % (("?",) * len(params)),  # Django's %s placeholders in sqlite3's style
        "params": list(params),
        "flags": flags,
        "after": after,
        "upto": upto,
        "wanted": wanted,
        "seconds": ANSWER_SECONDS,
        "first_lines": scan.FIRST_LINES,
    }
    try:
        child = subprocess.run(
            [sys.executable, "-I", str(_CHILD)],
            input=json.dumps(request),
            capture_output=True,
            text=True,
            timeout=TIME_LIMIT,
        )
    except subprocess.TimeoutExpired as exc:  # the child was killed
        raise _too_slow() from exc
    if child.returncode != 0:
        raise RuntimeError(f"the search process failed ({child.returncode}): {child.stderr[-2000:]}")
    answer = json.loads(child.stdout)
    return answer["numbers"], answer["searched"]
