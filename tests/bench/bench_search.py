"""Search benchmark: GET /jobs/<id>/search's work over a 1,000,000-line run, on SQLite and on
PostgreSQL.

    python -m tests.bench.bench_search [--lines 1000000] [--repeat 3] [--databases sqlite,postgresql]
        [--json out.json] [--quick]

For each database it runs itself in a child process against a fresh benchmark database
(SQLite: /tmp/bench_search/run-PID/; PostgreSQL: $BENCH_POSTGRES/bench_search_run_PID, by
default on postgres://root@127.0.0.1:5432; dropped at the end), stores one finished run of
--lines lines through the log writer's own insert, and times jobs.streaming.search.find()
(what the endpoint does, without HTTP) as the job page calls it: answer after answer, each
from the line where the last one stopped, until 1,000 matches or the run's end. It gives
the time to the first answer, to the first match and to the end of the search, and the
number of answers, for:
- a rare text (3 lines of the run contain it, so the whole run is scanned), ignoring case
  (the default) and with case=1;
- a common text (every line): the first 1,000 matches, the endpoint's default limit;
- a regex whose required text is rare (1 line in 1,000; the first 1,000 matches are the
  whole run's), and regexes that the regex engine has to read every line for: one whose
  required text is in every line, one with a choice of required texts in every line, and
  one with no required text (few or no lines match them: the worst cases).
Figures are medians of --repeat runs after ANALYZE, beside one run's whole search before it
(PostgreSQL then has no statistics for the new rows). Baselines, each timed the same way: Python's re over
list(job.lines.values_list("number", "text")), and on SQLite the same regexes through
Django's own REGEXP function in the server's process (what the child process replaces).
On PostgreSQL it also measures what a pg_trgm GIN index on the text would cost: the writer's
insert of 200,000 lines (at most --lines) without and with one, and the rare text's search
as an ILIKE with it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import django

from tests.bench.bench_streaming import database_url

RUN_DIR = Path("/tmp/bench_search") / f"run-{os.getpid()}"

#: (name, q, regex, case-sensitive), in the table's order.
CASES = [
    ("rare text", "Disk Full", False, False),
    ("rare text, case=1", "disk full", False, True),
    ("common text (first 1,000)", "processed batch", False, False),
    ("regex, rare required text", r"timeout after \d+ ms", True, False),
    ("regex, rare required text ending in a repeat", r"items \(0 errors\), checksum 0{4}", True, False),
    ("regex, its alternatives in every line", r"err(or|no)\s+\d{3}", True, False),
    ("regex, no required text", r"\d{4}-\d\d", True, False),
]
#: A line in RARE_EVERY holds the rare text; one in REGEX_EVERY the regex's rare text.
RARE_AT = (1 / 3, 2 / 3, 1.0)
REGEX_EVERY = 1000
INDEX_COST_LINES = 200_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--databases", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql")
    parser.add_argument("--json", help="write the figures here as JSON")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test that takes seconds")
    parser.add_argument("--child-out", help=argparse.SUPPRESS)  # this process is one database's run
    args = parser.parse_args()
    if args.quick:
        args.lines, args.repeat = 20_000, 1
    if args.child_out:
        run_database(args)
        return
    results: dict[str, Any] = {"lines": args.lines, "repeat": args.repeat, "databases": {}}
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    for database in args.databases.split(","):
        out = RUN_DIR / f"{database}.json"
        env = {**os.environ, "DATABASE_URL": database_url(database, RUN_DIR), "SECRET_KEY": "benchmark-only"}
        command = [sys.executable, "-m", "tests.bench.bench_search", "--child-out", str(out)]
        command += ["--lines", str(args.lines), "--repeat", str(args.repeat)]
        subprocess.run(command, env=env, check=True)
        results["databases"][database] = json.loads(out.read_text())
        print_table(database, results["databases"][database], args.lines)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


def run_database(args: argparse.Namespace) -> None:
    """In the child: a test database of DATABASE_URL's, the run, the timings."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    django.setup()
    from django.db import connection

    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    try:
        results = measure(args.lines, args.repeat)
    finally:
        connection.close()
        connection.creation.destroy_test_db(old_name, verbosity=0)
    Path(args.child_out).write_text(json.dumps(results))


def line_text(number: int, lines: int) -> str:
    if number in {max(1, round(lines * at)) for at in RARE_AT}:
        return f"{number:07d} ERROR disk full on /dev/sda1, retrying"
    if number % REGEX_EVERY == 0:
        return f"{number:07d} WARNING worker-{number % 16}: request {number} timeout after {number % 5000} ms"
    checksum = uuid.uuid5(uuid.NAMESPACE_OID, str(number)).hex
    return f"{number:07d} INFO worker-{number % 16}: processed batch {number} of items (0 errors), checksum {checksum}"


def store_run(lines: int) -> Any:
    """A finished run of `lines` lines, stored by the log writer's insert (as its flusher does)."""
    from django.utils import timezone

    from jobs.models import Job, JobStatus

    now = timezone.now()
    job = Job.objects.create(name="bench.search", status=JobStatus.SUCCEEDED, started_at=now, finished_at=now)
    store_lines(job.id, 1, [line_text(number, lines) for number in range(1, lines + 1)])
    job.refresh_from_db()
    return job


def store_lines(job_id: uuid.UUID, first: int, texts: list[str]) -> float:
    """Seconds to store `texts` as lines first.. of the run, in the flusher's batch size."""
    from django.utils import timezone

    from jobs.logstore import storage
    from jobs.logstore.writer import Batch

    step = 10_000
    started = time.perf_counter()
    for start in range(0, len(texts), step):
        part = texts[start : start + step]
        number = first + start
        storage.store([Batch(job_id, number, [("stdout", part)], timezone.now(), number + len(part) - 1)])
    return time.perf_counter() - started


def whole_search(job: Any, query: Any) -> dict[str, Any]:
    """The answers the page asks for, each from the last one's `searched`, until 1,000
    matches or the end: seconds to the first answer, to the first match and to the end."""
    from jobs.streaming import search

    numbers: list[int] = []
    after, answers, first_match = 0, 0, None
    started = time.perf_counter()
    while True:
        found = search.find(job, query, after, search.DEFAULT_MATCHES - len(numbers))
        answers += 1
        if answers == 1:
            first_answer = time.perf_counter() - started
        numbers += found.numbers
        if numbers and first_match is None:
            first_match = time.perf_counter() - started
        if not found.more or len(numbers) == search.DEFAULT_MATCHES:
            break
        after = found.searched
    seconds = time.perf_counter() - started
    return {
        "first_answer_seconds": first_answer,
        "first_match_seconds": seconds if first_match is None else first_match,
        "seconds": seconds,
        "answers": answers,
        "numbers": numbers,
    }


def timed_search(job: Any, query: Any, repeat: int) -> dict[str, Any]:
    """Medians of `repeat` whole searches' figures, and the last one's matches."""
    runs = [whole_search(job, query) for _ in range(repeat)]
    figures = {key: statistics.median(run[key] for run in runs) for key in runs[0] if key != "numbers"}
    return {**figures, "numbers": runs[-1]["numbers"]}


def timed(call: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """Median seconds of `repeat` calls, and the last call's result."""
    seconds, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = call()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds), result


def measure(lines: int, repeat: int) -> dict[str, Any]:
    from django.db import connection

    from jobs.streaming import search

    # The time limit guards a server; here a slow search is a figure, not a failure.
    search.TIME_LIMIT = 600.0
    started = time.perf_counter()
    job = store_run(lines)
    results: dict[str, Any] = {"database": connection.vendor, "store_seconds": time.perf_counter() - started}
    queries = {name: search.make_query(q, regex=regex, case_sensitive=case) for name, q, regex, case in CASES}
    before = {name: whole_search(job, query)["seconds"] for name, query in queries.items()}
    analyze(connection)
    cases = {}
    for name, q, regex, case in CASES:
        found = timed_search(job, queries[name], repeat)
        baseline, expected = timed(lambda q=q, regex=regex, case=case: python_re(job, q, regex, case), repeat)
        numbers = found.pop("numbers")
        assert numbers == expected, f"{name}: the search and Python's re disagree"
        cases[name] = {
            **found,
            "before_analyze_seconds": before[name],
            "matches": len(numbers),
            "python_re_seconds": baseline,
        }
        if regex and connection.vendor == "sqlite":
            cases[name]["in_process_regexp_seconds"] = timed(lambda q=q: django_regexp(job, q), repeat)[0]
    results["cases"] = cases
    if connection.vendor == "postgresql":
        results["trigram_index"] = trigram_index_cost(job, queries["rare text"], min(lines, INDEX_COST_LINES), repeat)
    return results


def analyze(connection: Any) -> None:
    from jobs.models import LogLine

    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {connection.ops.quote_name(LogLine._meta.db_table)}")


def python_re(job: Any, q: str, regex: bool, case: bool) -> list[int]:
    """The baseline: every line into Python, then re; the first 1,000 matches as the search."""
    pattern = re.compile(q if regex else re.escape(q), 0 if case else re.IGNORECASE)
    rows = list(job.lines.values_list("number", "text"))
    return [number for number, text in rows if pattern.search(text)][:1000]


def django_regexp(job: Any, q: str) -> list[int]:
    """Django's REGEXP in this process: as fast, but it would hold the GIL for a whole match."""
    return list(job.lines.filter(text__iregex=q).order_by("number").values_list("number", flat=True)[:1001])


def trigram_index_cost(job: Any, rare: Any, lines: int, repeat: int) -> dict[str, Any]:
    """The writer's insert of `lines` lines into another run, without and then with a pg_trgm
    GIN index on the text (the index a LIKE or regex search could use); the rare text's
    search with the index."""
    from django.db import connection

    from jobs.models import Job, LogLine

    texts = [line_text(number, lines) for number in range(1, lines + 1)]
    without = store_lines(Job.objects.create(name="bench.search.plain").id, 1, texts)
    table = connection.ops.quote_name(LogLine._meta.db_table)
    column = connection.ops.quote_name(LogLine._meta.get_field("text").column)
    with connection.cursor() as cursor:
        cursor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        started = time.perf_counter()
        cursor.execute(f"CREATE INDEX bench_search_trgm ON {table} USING gin ({column} gin_trgm_ops)")
        build = time.perf_counter() - started
        cursor.execute("SELECT pg_relation_size('bench_search_trgm'), pg_relation_size(%s)", [LogLine._meta.db_table])
        index_bytes, table_bytes = cursor.fetchone()
    with_index = store_lines(Job.objects.create(name="bench.search.indexed").id, 1, texts)
    analyze(connection)
    number = connection.ops.quote_name(LogLine._meta.get_field("number").column)
    job_column = connection.ops.quote_name(LogLine._meta.get_field("job").column)
    # The search's own conditions (strpos) cannot use the index; ILIKE can.
    indexed_sql = (
        f"SELECT {number} FROM {table} WHERE {job_column} = %s AND {column} ILIKE %s ORDER BY {number} LIMIT 1001"  # noqa: S608
    )

    def indexed_search() -> list[Any]:
        with connection.cursor() as cursor:
            cursor.execute(indexed_sql, [job.id, f"%{rare.text}%"])
            return cursor.fetchall()

    rare_seconds = timed(indexed_search, repeat)[0]
    with connection.cursor() as cursor:
        cursor.execute("DROP INDEX bench_search_trgm")
    return {
        "lines": lines,
        "insert_lines_per_s_without": lines / without,
        "insert_lines_per_s_with": lines / with_index,
        "build_seconds": build,
        "index_mb": index_bytes / 1e6,
        "table_mb": table_bytes / 1e6,
        "rare_text_ilike_seconds_with_index": rare_seconds,
    }


def print_table(database: str, results: dict[str, Any], lines: int) -> None:
    print(f"Search benchmark on {database} ({lines:,} lines, stored in {results['store_seconds']:.1f} s)")
    width = max(len(name) for name, *_ in CASES)
    print(
        f"  {'':<{width}}  {'1st answer':>10}  {'1st match':>9}  {'all':>8}  {'answers':>7}  {'no ANALYZE':>10}"
        f"  {'Python re':>9}  matches"
    )
    for name, figures in results["cases"].items():
        line = f"  {name:<{width}}  {figures['first_answer_seconds']:>9.3f}s  {figures['first_match_seconds']:>8.3f}s"
        line += f"  {figures['seconds']:>7.3f}s  {figures['answers']:>7g}  {figures['before_analyze_seconds']:>9.3f}s"
        line += f"  {figures['python_re_seconds']:>8.3f}s  {figures['matches']:,}"
        if "in_process_regexp_seconds" in figures:
            line += f"  (Django's REGEXP in process: {figures['in_process_regexp_seconds']:.3f}s)"
        print(line)
    if "trigram_index" in results:
        index = results["trigram_index"]
        print(
            f"  pg_trgm GIN index: insert {index['insert_lines_per_s_without']:,.0f} -> "
            f"{index['insert_lines_per_s_with']:,.0f} lines/s; {index['index_mb']:.0f} MB beside "
            f"{index['table_mb']:.0f} MB of table; built in {index['build_seconds']:.1f} s; "
            f"rare text (ILIKE) with it {index['rare_text_ilike_seconds_with_index']:.3f}s"
        )


if __name__ == "__main__":
    main()
