"""Capture benchmarks: demo.flood to committed rows, and the cost of print() in a job.

    python -m tests.bench.bench_capture [--lines 200000] [--repeat 3] [--json out.json]

Runs against a fresh test database of whatever DATABASE_URL names (SQLite by default).
Every figure stands beside baselines measured in the same run:
- flood: one LogLine.objects.create per line (on a sample, as a rate), Django bulk_create,
  and the ceiling: the writer's own insert (json_each on SQLite, COPY on PostgreSQL) of
  prepared rows in flusher-sized batches, with no capture at all;
- print: print() to /dev/null, against print() in a job thread (hot path only: the
  writer's buffer has room and nothing drains it while timing), measured in pairs.
Figures are medians of --repeat runs (at least 5 pairs for print).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import django


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--prints", type=int, default=200_000)
    parser.add_argument("--json", help="write the figures here as JSON")
    args = parser.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("SECRET_KEY", "benchmark-only")
    django.setup()
    from django.db import connection

    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    from jobs.running.runner import get_runner

    try:
        results = {"database": connection.vendor, **run_all(args)}
    finally:
        get_runner().stop()
        connection.creation.destroy_test_db(old_name, verbosity=0)
    print_table(results)
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=2)


def run_all(args: argparse.Namespace) -> dict[str, Any]:
    lines = args.lines
    flood = median_rate(lambda: flood_through_capture(lines), lines, args.repeat)
    ceiling = median_rate(lambda: raw_insert(lines), lines, args.repeat)
    bulk = median_rate(lambda: bulk_create(lines), lines, args.repeat)
    sample = min(lines, 5_000)
    per_row = median_rate(lambda: create_per_line(sample), sample, args.repeat)
    devnull_ns, job_ns, print_ratio = print_costs(args.prints, args.repeat)
    return {
        "lines": lines,
        "flood_lines_per_s": flood,
        "raw_insert_lines_per_s": ceiling,
        "bulk_create_lines_per_s": bulk,
        "create_per_line_lines_per_s": per_row,
        "flood_vs_ceiling": flood / ceiling,
        "flood_vs_bulk_create": flood / bulk,
        "print_devnull_ns": devnull_ns,
        "print_in_job_ns": job_ns,
        "print_ratio": print_ratio,
    }


def median_rate(run: Callable[[], float], count: int, repeat: int) -> float:
    return statistics.median(count / run() for _ in range(repeat))


def flood_through_capture(lines: int) -> float:
    """Seconds from launching demo.flood to its last line committed (status saved)."""
    from jobs.launcher import create_run
    from jobs.models import JobStatus, LogLine
    from jobs.running.runner import start

    job = create_run("demo.flood", {"lines": lines})
    started = time.perf_counter()
    start().run(job)
    elapsed = time.perf_counter() - started
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert LogLine.objects.filter(job=job).count() == lines
    return elapsed


def _prepared_batch(lines: int) -> Any:
    from django.utils import timezone

    from jobs.logstore.writer import Batch
    from jobs.models import Job

    job = Job.objects.create(name="bench.rows")
    texts = [f"{index:>12} {'x' * 66}" for index in range(lines)]
    return job, Batch(
        job_id=job.id, first_number=1, segments=[("stdout", texts)], created_at=timezone.now(), line_count=lines
    )


def raw_insert(lines: int) -> float:
    """The ceiling: the writer's storage of ready rows, in batches like the flusher's."""
    from jobs.logstore import storage
    from jobs.logstore.writer import Batch

    job, batch = _prepared_batch(lines)
    texts = batch.segments[0][1]
    step = 10_000
    started = time.perf_counter()
    for first in range(0, lines, step):
        part = texts[first : first + step]
        storage.store([Batch(job.id, first + 1, [("stdout", part)], batch.created_at, first + len(part))])
    return time.perf_counter() - started


def bulk_create(lines: int) -> float:
    from django.db import transaction

    from jobs.models import LogLine

    job, batch = _prepared_batch(lines)
    texts = batch.segments[0][1]
    started = time.perf_counter()
    with transaction.atomic():
        LogLine.objects.bulk_create(
            (
                LogLine(job=job, number=n, stream="stdout", text=t, created_at=batch.created_at)
                for n, t in enumerate(texts, 1)
            ),
            batch_size=5_000,
        )
    return time.perf_counter() - started


def create_per_line(lines: int) -> float:
    from jobs.models import LogLine

    job, batch = _prepared_batch(lines)
    started = time.perf_counter()
    for number, text in enumerate(batch.segments[0][1], 1):
        LogLine.objects.create(job=job, number=number, stream="stdout", text=text, created_at=batch.created_at)
    return time.perf_counter() - started


def print_costs(prints: int, repeat: int) -> tuple[float, float, float]:
    """ns per print() to /dev/null and in a job thread (hot path: the buffer has room and
    nothing drains it while timing), and the median of their ratios. Each pair is measured
    back to back in fresh threads, so that machine noise hits both sides alike."""
    from django.test import override_settings

    from jobs.logstore.writer import LogWriter
    from jobs.running import capture
    from jobs.running.control import JobContext

    def timed_in_thread(body: Callable[[], None]) -> float:
        result: list[float] = []

        def run() -> None:
            started = time.perf_counter()
            body()
            result.append(time.perf_counter() - started)

        thread = threading.Thread(target=run)
        thread.start()
        thread.join()
        return result[0]

    def to_devnull() -> None:
        with open(os.devnull, "w") as devnull:
            for index in range(prints):
                print(f"Task #{index}", file=devnull)

    def in_job() -> None:
        with override_settings(RUNLOG_WRITER_BUFFER=4 * prints):
            writer = LogWriter(uuid.uuid4(), lambda writer: None)
        writer.control = context = JobContext(writer.job_id, "bench", writer, timeout=None)
        capture.bind(context)
        try:
            for index in range(prints):
                print(f"Task #{index}")
        finally:
            capture.bind(None)

    pairs = [(timed_in_thread(to_devnull), timed_in_thread(in_job)) for _ in range(max(repeat, 5))]
    devnull = statistics.median(d for d, _ in pairs) / prints * 1e9
    job = statistics.median(j for _, j in pairs) / prints * 1e9
    return devnull, job, statistics.median(j / d for d, j in pairs)


def print_table(results: dict[str, Any]) -> None:
    rows = [
        ("demo.flood, capture to committed rows", f"{results['flood_lines_per_s']:,.0f} lines/s"),
        ("ceiling: the writer's insert of ready rows, no capture", f"{results['raw_insert_lines_per_s']:,.0f} lines/s"),
        ("baseline: Django bulk_create", f"{results['bulk_create_lines_per_s']:,.0f} lines/s"),
        ("baseline: one create() per line", f"{results['create_per_line_lines_per_s']:,.0f} lines/s"),
        ("flood / ceiling", f"{results['flood_vs_ceiling']:.2f}"),
        ("flood / bulk_create", f"{results['flood_vs_bulk_create']:.2f}x"),
        ("print() to /dev/null", f"{results['print_devnull_ns']:.0f} ns"),
        ("print() in a job", f"{results['print_in_job_ns']:.0f} ns"),
        ("print in job / devnull (median of paired runs)", f"{results['print_ratio']:.2f}x"),
    ]
    width = max(len(label) for label, _ in rows)
    print(f"Capture benchmark on {results['database']} ({results['lines']:,} lines)", file=sys.stderr)
    for label, value in rows:
        print(f"  {label:<{width}}  {value}", file=sys.stderr)


if __name__ == "__main__":
    main()
