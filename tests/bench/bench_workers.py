"""Worker benchmarks: how long a launch takes to reach a worker, and how capture scales
with worker processes.

    python -m tests.bench.bench_workers [--databases sqlite,postgresql] [--launches 20]
        [--lines 200000] [--processes 1,2,4] [--json out.json] [--quick]

- launch: from `jobs.launch()` to the run's first line stored (the line's own timestamp,
  set by the flusher that stored it), for each backend: threads (this process), database
  (one `manage.py db_worker`, at its default poll interval and at 0.1 s) and celery (one
  prefork worker, Redis broker). Launches of demo.echo one at a time, each after a random
  pause that leaves the worker idle; median and p90.
- throughput: N `db_worker` processes, each flooding one demo.flood run of --lines lines at
  once; lines stored per second in all, from the first run's start to the last one's end.
  The baseline is one process, in the same run.

Each database is made for the run and dropped after: SQLite in a temporary folder,
PostgreSQL as bench_workers_PID on $BENCH_POSTGRES (default postgres://root@127.0.0.1:5432).
The Celery broker is $BENCH_BROKER (default redis://127.0.0.1:6379/14), emptied first.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.worker_processes import READY, worker_command

PROJECT_DIR = Path(__file__).resolve().parents[2]
WAIT = 300.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--launches", type=int, default=20)
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--processes", default="1,2,4")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--json", help="write the figures here as JSON")
    args = parser.parse_args()
    if args.quick:
        args.launches, args.lines, args.processes = 3, 5_000, "1,2"

    results: dict[str, Any] = {}
    for database in args.databases.split(","):
        with bench_database(database) as env:
            results[database] = {
                "launch": launch_latencies(env, args.launches),
                "throughput": throughput(env, args.lines, [int(n) for n in args.processes.split(",")]),
            }
    print_tables(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


# --- Databases and processes ------------------------------------------------------------------


@contextmanager
def bench_database(database: str) -> Iterator[dict[str, str]]:
    """The environment of processes that use a new database of kind `database`."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "SECRET_KEY": "benchmark-only",
        "CELERY_BROKER_URL": os.environ.get("BENCH_BROKER", "redis://127.0.0.1:6379/14"),
        "PYTHONUNBUFFERED": "1",
    }
    with tempfile.TemporaryDirectory(prefix="bench_workers_") as folder:
        if database == "sqlite":
            env["DATABASE_URL"] = f"sqlite:///{folder}/db.sqlite3"
        else:
            server = os.environ.get("BENCH_POSTGRES", "postgres://root@127.0.0.1:5432")
            env["DATABASE_URL"] = f"{server}/bench_workers_{os.getpid()}"
            _postgres(server, f"DROP DATABASE IF EXISTS bench_workers_{os.getpid()}")
            _postgres(server, f"CREATE DATABASE bench_workers_{os.getpid()}")
        env["BENCH_FOLDER"] = folder
        try:
            manage(env, "migrate", "--no-input", "-v", "0")
            yield env
        finally:
            if database != "sqlite":
                _postgres(server, f"DROP DATABASE IF EXISTS bench_workers_{os.getpid()} WITH (FORCE)")


def _postgres(server: str, sql: str) -> None:
    import psycopg

    parsed = urllib.parse.urlsplit(server)
    with psycopg.connect(
        host=parsed.hostname, port=parsed.port or 5432, user=parsed.username, dbname="postgres", autocommit=True
    ) as connection:
        connection.execute(sql)  # type: ignore[arg-type]


def manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=WAIT
    )
    if done.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


@contextmanager
def workers(env: dict[str, str], backend: str, count: int, *args: str) -> Iterator[None]:
    """`count` worker processes of `backend`, ready to take tasks."""
    env = {**env, "TASK_BACKEND": backend}
    logs, processes = [], []
    for index in range(count):
        log_path = Path(env["BENCH_FOLDER"]) / f"{backend}-{index}-{time.monotonic_ns()}.log"
        command = worker_command(backend, f"bench{index}-{os.getpid()}", *args)
        with log_path.open("wb") as log:
            processes.append(subprocess.Popen(command, cwd=PROJECT_DIR, env=env, stdout=log, stderr=subprocess.STDOUT))
        logs.append(log_path)
    deadline = time.monotonic() + WAIT
    while not all(READY[backend] in path.read_text(errors="replace") for path in logs):
        if time.monotonic() > deadline or any(process.poll() is not None for process in processes):
            raise RuntimeError("a worker did not start:\n" + "\n".join(p.read_text(errors="replace") for p in logs))
        time.sleep(0.05)
    try:
        yield
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            process.wait(WAIT)


# --- launch -> first line stored -------------------------------------------------------------

#: Runs in a child process per backend: sequential launches, each waited for.
LAUNCH_SCRIPT = """
import json, random, sys, time
import django
django.setup()
from django.utils import timezone
import jobs
from jobs.models import Job, LogLine
delays = []
for _ in range(int(sys.argv[1])):
    time.sleep(random.uniform(0.2, 1.2))  # a launch finds the worker idle, at a random point of its poll
    launched = timezone.now()
    job = jobs.launch("demo.echo", text="hello")
    while not Job.objects.filter(pk=job.pk, status__in=["succeeded", "failed", "cancelled", "lost"]).exists():
        time.sleep(0.005)
    first = LogLine.objects.get(job=job, number=1)
    delays.append((first.created_at - launched).total_seconds() * 1000)
print(json.dumps(delays))
"""


def launch_latencies(env: dict[str, str], launches: int) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    configurations: list[tuple[str, str, tuple[str, ...]]] = [
        ("threads (this process)", "threads", ()),
        ("database (db_worker, --interval 1, its default)", "database", ()),
        ("database (db_worker --interval 0.1)", "database", ("--interval", "0.1")),
        ("celery (prefork worker, Redis)", "celery", ("--pool", "prefork", "--concurrency", "1")),
    ]
    for label, backend, args in configurations:
        if backend == "celery":
            _empty_broker(env["CELERY_BROKER_URL"])
        launching_env = {**env, "TASK_BACKEND": backend}
        with workers(env, backend, 0 if backend == "threads" else 1, *args):
            output = subprocess.run(
                [sys.executable, "-c", LAUNCH_SCRIPT, str(launches)],
                cwd=PROJECT_DIR, env=launching_env, capture_output=True, text=True, timeout=WAIT, check=True,
            ).stdout  # fmt: skip
        delays = json.loads(output.splitlines()[-1])
        figures[label] = {"median_ms": statistics.median(delays), "p90_ms": _percentile(delays, 90), "n": len(delays)}
    return figures


def _empty_broker(url: str) -> None:
    import redis

    redis.Redis.from_url(url).flushdb()


def _percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


# --- capture throughput with several worker processes ------------------------------------------

THROUGHPUT_SCRIPT = """
import json, sys, time
import django
django.setup()
from django.db.models import Max, Min, Sum
import jobs
from jobs.models import Job
runs = [jobs.launch("demo.flood", lines=int(sys.argv[2])) for _ in range(int(sys.argv[1]))]
ids = [run.pk for run in runs]
while Job.objects.filter(pk__in=ids, status__in=["queued", "running"]).exists():
    time.sleep(0.05)
done = Job.objects.filter(pk__in=ids)
assert set(done.values_list("status", flat=True)) == {"succeeded"}, list(done.values_list("status", "error"))
span = done.aggregate(first=Min("started_at"), last=Max("finished_at"), lines=Sum("line_count"))
print(json.dumps({"lines": span["lines"], "seconds": (span["last"] - span["first"]).total_seconds(),
                  "workers": len(set(done.values_list("worker", flat=True)))}))
"""


def throughput(env: dict[str, str], lines: int, counts: list[int]) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for count in counts:
        with workers(env, "database", count, "--interval", "0.1"):
            output = subprocess.run(
                [sys.executable, "-c", THROUGHPUT_SCRIPT, str(count), str(lines)],
                cwd=PROJECT_DIR, env={**env, "TASK_BACKEND": "database"}, capture_output=True, text=True,
                timeout=WAIT, check=True,
            ).stdout  # fmt: skip
        run = json.loads(output.splitlines()[-1])
        figures[str(count)] = {**run, "lines_per_s": run["lines"] / run["seconds"]}
    base = figures[str(counts[0])]["lines_per_s"]
    for figure in figures.values():
        figure["vs_first"] = figure["lines_per_s"] / base
    return figures


def print_tables(results: dict[str, Any]) -> None:
    for database, figures in results.items():
        print(f"Workers benchmark on {database}", file=sys.stderr)
        print("  launch -> first line stored (median / p90)", file=sys.stderr)
        for label, launch in figures["launch"].items():
            print(f"    {label:<52} {launch['median_ms']:8.1f} / {launch['p90_ms']:8.1f} ms", file=sys.stderr)
        print("  demo.flood in N db_worker processes at once, lines/s in all", file=sys.stderr)
        for count, run in figures["throughput"].items():
            print(
                f"    {count} process(es), {run['workers']} used: {run['lines_per_s']:>10,.0f} lines/s"
                f" (x{run['vs_first']:.2f})",
                file=sys.stderr,
            )


if __name__ == "__main__":
    main()
