"""Streaming benchmarks through a real gunicorn, on SQLite and PostgreSQL.

    python -m tests.bench.bench_streaming [--json out.json] [--quick] [--databases sqlite,postgresql]
        [--sections latency,fanout,replay,idle,growth,capacity] [--configs gthread:2x256,default,plain-uvicorn:1]
        [--viewers 200] [--repeat 3] [--replay-lines 1000000] [--fanout-lines 20000] [--crowd 2000]
        [--burst 1000] [--idle-runs 4] [--profile DIR] [--in-place]

It measures a snapshot of the working tree taken when it starts (other people edit this
checkout while it runs; --in-place measures the checkout itself). For each database it
runs itself in a child process against a fresh benchmark database (SQLite:
/tmp/bench_stream/run-PID/db.sqlite3; PostgreSQL: $BENCH_POSTGRES/bench_stream_run_PID, by default on
postgres://root@127.0.0.1:5432,
dropped at the end, so that runs may overlap), starts gunicorn servers in their own process groups with
config/gunicorn.conf.py and GUNICORN_WORKERS/GUNICORN_THREADS (or --worker-class asgi), and
reads their streams with tests/bench/sse_client.py in a separate process (one epoll loop;
it only records bytes and arrival times while the streams run, and parses afterwards).
Servers use tests/bench/stream_settings.py: the production settings plus the bench app.

1. Latency, print() -> bytes at an SSE client, of a job printing a line every 10 ms:
   (a) the job runs in the serving process (one worker; launched through the admin launch
   form), (b) it runs in another process (`manage.py runjob`, a worker's stand-in), so the
   server's poller brings its lines: on PostgreSQL as soon as the listener hears of them
   (NOTIFY), on SQLite every POLL_INTERVAL; (c) PostgreSQL only: the same to a server with
   RUNLOG_NOTIFY off, which polls. The job is bench.clock (tests/bench/jobs.py): demo.count whose lines
   start with the time.time() of their own print(), so latency is measured from the print()
   itself; the line's `t` (the flusher's timestamp) splits it into print -> `t` and
   `t` -> arrival. Baseline: the same loop sending its lines over a bare loopback socket.
2. Fan-out: VIEWERS SSE viewers of one job printing (at most) 1,000 lines/s (bench.clock
   n=20000 interval=0.001, in a runjob process as in production, or launched through the
   admin form into the server with Sizes.fanout_job_in="server"), per server configuration
   (the threaded workers as they ran before streams had a limit, and the default):
   lines delivered to each viewer (count, numbers 1..N in order, a digest of every line
   against the database), latency (overall, and for the viewers in the job's own worker
   and in the others, told apart by the client's port in /proc/net/tcp), time to first
   byte, the job's own line rate, server CPU per process and RSS (/proc), connections per
   worker, the admin changelist's response time sampled meanwhile (one request at a time),
   PostgreSQL's transactions and sessions per second, and the CPU of the client, of this
   process and of everything else on the machine. Baselines: the changelist on the idle
   server, and the server's CPU for the same job with no viewer.
3. Replay of a finished 1,000,000-line run (demo.flood) through log.txt and events:
   lines/s, and the worker's peak RSS growth during the request (VmHWM after resetting it
   through /proc/<pid>/clear_refs): once right after the run was written (PostgreSQL has
   no statistics for its rows yet), then --repeat times after ANALYZE. Baselines in this
   process, each on a new connection: list(job.lines.all()), the server's own chunked
   reads (rows_after) alone, and those reads plus each wire format.
4. Idle cost: VIEWERS SSE viewers of running jobs that print nothing (bench.silent: one
   line, silence, "Done"), on the server's default configuration: the server's CPU (master
   and workers, /proc) over a window of 30 s once every viewer has its first bytes, as % of
   one core, and on PostgreSQL the queries that the server's database sessions start
   (ServerQueries: pg_stat_activity sampled every 20 ms), (a) with the job in the serving
   process (launched through the admin form: its viewers wait on the in-process queue), (b)
   with the viewers spread over idle_runs jobs, each in a runjob process, on a server of
   their own whose supervisor stays quiet (it runs no job: its queries are then its
   viewers' and its poller's; on PostgreSQL the server's listener waits for the runs'
   announcements, on SQLite its poller reads them every POLL_INTERVAL), (c) PostgreSQL
   only: the same to a server with RUNLOG_NOTIFY off; the viewers' heartbeats and bytes,
   and whether each still got every line and `done` when its job ended after the window.
   Baselines: the same server's floor (the silent jobs running, no viewer; a window before
   the viewers connect), and as many viewers of the streaming view of the Django article Runlog
   grew from (tests/bench/baseline_views.py: a StreamingHttpResponse generator
   spinning on queue.get_nowait() while a silent thread lives). Its spinning starves the
   server, so its window starts after 5 s whether or not every viewer has its first bytes
   (the figures say how many had), and its threads all end when the window ends.
5. Growth: 1, 4 and 16 jobs flooding at once (bench.flood_clock: lines carrying their print
   time, printed as fast as the job can, from one shared start time; a fixed total of
   200,000 lines split evenly among the jobs, so that the throughput curve is comparable),
   launched through the admin form on the default configuration with RUNLOG_WORKERS=16 (all
   run at once, in whichever worker took the launch), one SSE viewer per job: lines stored
   per second over all jobs (first start to last finish, from the Job rows) and per job
   (median), print -> arrival p50/p99 over all viewers (and split by the viewer's worker,
   as in fan-out), viewers with every line, server CPU; medians of --repeat rounds. Baseline:
   the same flood as one job with no viewer (capture alone): its ratio to the 1-job run is
   the viewer's cost.

6. Capacity, per server configuration (--configs: gunicorn's gthread or uvicorn workers,
   plain uvicorn, waitress), with a silent run in a runjob process: a burst of BURST stream
   connections opened at once (how many were served, refused with 503 or left unanswered;
   time to first bytes p50 / p99), then a crowd of CROWD idle streams held open (the same,
   and the server's memory per stream); pages (admin, run list, a run's page, status,
   log.txt) loaded one after another meanwhile, a load past 15 s counted as timed out.
   Baseline: gthread 2x256 without a stream limit, as threaded workers ran before.

--profile DIR records py-spy (`py-spy record --gil --threads --format raw`) of every worker
during the fan-out runs and replay requests; tests/bench/profile_summary.py sums a profile
per function. Figures are medians of --repeat runs where a section repeats. The machine is
shared and noisy: judge the ratios and the baselines beside them.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import re
import runpy
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROJECT_DIR = Path(__file__).resolve().parents[2]
WORK_DIR = Path("/tmp/bench_stream")
#: This run's files (databases, snapshot, server logs, client files): runs may overlap.
RUN_DIR = WORK_DIR / f"run-{os.getpid()}"


def database_url(database: str, run_dir: Path) -> str:
    """A database of this run's own (dropped at its end), so that runs may overlap."""
    if database == "sqlite":
        return f"sqlite:///{run_dir}/db.sqlite3"
    if database == "postgresql":
        server = os.environ.get("BENCH_POSTGRES", "postgres://root@127.0.0.1:5432")
        return f"{server}/{run_dir.parent.name}_{run_dir.name.replace('-', '_')}"
    raise ValueError(f"unknown database {database!r}: sqlite or postgresql")


SETTINGS = "tests.bench.stream_settings"
#: A server's environment for reading the runs of other processes every POLL_INTERVAL only
#: (on PostgreSQL it otherwise hears of their changes by NOTIFY).
POLL_ONLY = {"RUNLOG_NOTIFY": "0"}
#: ... and for a supervisor that stays quiet, in a server that runs no job: then all the
#: queries of the server's sessions are its viewers' (and its poller's).
QUIET_SUPERVISOR = {"RUNLOG_HEARTBEAT_INTERVAL": "3600"}
#: The idle section: time for its viewers to settle after their first bytes (replay, subscribe)
#: before the window, and the least time kept between the window and the job's next line.
IDLE_SETTLE = 0.5
IDLE_MARGIN = 2.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
ADMIN_CHANGELIST = "/admin/jobs/job/"
#: The capacity section's page loads, in turn: none of them is a stream.
CAPACITY_PAGES = ("/admin/", "/jobs/", "/jobs/{job}/", "/jobs/{job}/status", "/jobs/{job}/log.txt")


def _todays(config: ServerConfig) -> dict[str, str]:
    """Threaded workers as they ran before streams had a limit: every stream takes a thread."""
    return {"RUNLOG_MAX_STREAMS": "1000000"} if config.worker_class == "gthread" else {}


@dataclass(frozen=True)
class Sizes:
    latency_lines: int = 500
    latency_interval: float = 0.01
    viewers: int = 200
    fanout_lines: int = 20_000
    fanout_interval: float = 0.001
    fanout_delay: float = 4.0
    replay_lines: int = 1_000_000
    repeat: int = 3
    admin_interval: float = 0.25
    #: The idle section's measuring window, and the time allowed before it for launching the
    #: silent job and connecting its viewers (the job stays silent for both).
    idle_window: float = 30.0
    idle_allowance: float = 5.0
    #: Silent runs in runjob processes that the idle section's viewers share.
    idle_runs: int = 4
    growth_jobs: tuple[int, ...] = (1, 4, 16)
    #: The growth section's lines in all, split evenly among the jobs of each case.
    growth_lines: int = 200_000
    #: Seconds between the first launch and the flood (launching, connecting the viewers).
    growth_allowance: float = 2.0
    #: The shipped configuration and the earlier one (threads); --configs measures others,
    #: e.g. gthread:2x16 or uvicorn:4.
    configs: tuple[str, ...] = ("gthread:2x256", "default")
    #: Where the fan-out's job runs: "runjob" (another process, as a worker) or "server".
    fanout_job_in: str = "runjob"
    #: The capacity section: idle streams held open while pages are loaded (the crowd), and
    #: stream connections opened at once (the burst), per configuration.
    crowd_viewers: int = 2000
    burst_viewers: int = 1000
    #: Seconds the crowd's pages are sampled once its streams have connected, and the most
    #: the streams get to connect (or the burst to be answered).
    capacity_window: float = 20.0
    connect_allowance: float = 30.0
    #: Seconds after which a page load counts as timed out.
    page_timeout: float = 15.0


QUICK = Sizes(
    latency_lines=50,
    viewers=10,
    fanout_lines=300,
    fanout_delay=1.5,
    replay_lines=20_000,
    repeat=1,
    idle_window=1.0,
    # runjob processes take seconds to start on a busy machine (CI runs the smoke run beside the tests)
    idle_allowance=10.0,
    idle_runs=2,
    growth_jobs=(1, 2),
    growth_lines=4_000,
    growth_allowance=1.0,
    configs=("default",),
    crowd_viewers=30,
    burst_viewers=20,
    capacity_window=2.0,
    connect_allowance=10.0,
)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- The parent: one child process per database ------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", help="write the figures here as JSON")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test that takes seconds")
    parser.add_argument("--databases", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql")
    parser.add_argument("--sections", default="latency,fanout,replay,idle,growth,capacity")
    parser.add_argument("--configs", help="fan-out server configs, e.g. gthread:2x16,gthread:2x112,asgi:2")
    parser.add_argument("--viewers", type=int)
    parser.add_argument("--repeat", type=int)
    parser.add_argument("--replay-lines", type=int)
    parser.add_argument("--fanout-lines", type=int, help="lines of the fan-out's run (at 1,000 lines/s)")
    parser.add_argument("--crowd", type=int, help="the capacity section's idle streams")
    parser.add_argument("--burst", type=int, help="the capacity section's streams opened at once")
    parser.add_argument("--idle-runs", type=int, help="silent runs in runjob processes that the idle viewers share")
    parser.add_argument("--profile", help="record py-spy profiles of the server workers into this directory")
    parser.add_argument("--py-spy", default=None, help="path of py-spy (default: on PATH or /tmp/bench_stream/tools)")
    parser.add_argument(
        "--in-place", action="store_true", help="run the checkout itself, not a snapshot of it taken at the start"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--run-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        run_database(args)
        return

    RUN_DIR.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"sizes": sizes_from(args).__dict__, "databases": {}, "run_dir": str(RUN_DIR)}
    tree = PROJECT_DIR
    if not args.in_place:
        tree = take_snapshot()
        log(f"measuring a snapshot of the working tree: {tree}")
    results["code"] = code_version(tree)
    try:
        run_children(args, tree, results)
    finally:
        if tree != PROJECT_DIR:
            shutil.rmtree(tree, ignore_errors=True)
        log(f"server logs: {RUN_DIR}")
    if args.in_place and code_version(PROJECT_DIR)["digest"] != results["code"]["digest"]:
        results["code"]["changed_during_run"] = True  # the figures may mix versions
    print_table(results)
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=2)
    # The tables are printed whatever failed; the exit status says that something did.
    if any("error" in figures for figures in results["databases"].values()):
        sys.exit(1)


def run_children(args: argparse.Namespace, tree: Path, results: dict[str, Any]) -> None:
    for database in args.databases.split(","):
        url = database_url(database, RUN_DIR)
        out_path = str(RUN_DIR / f"{database}.json")
        command = [sys.executable, "-m", "tests.bench.bench_streaming", "--child", url, "--json", out_path,
                   "--run-dir", str(RUN_DIR)]  # fmt: skip
        for name in ("quick",):
            if getattr(args, name):
                command.append(f"--{name}")
        for name in (
            "sections",
            "configs",
            "viewers",
            "repeat",
            "replay_lines",
            "fanout_lines",
            "crowd",
            "burst",
            "idle_runs",
            "profile",
            "py_spy",
        ):
            value = getattr(args, name)
            if value is not None:
                command += [f"--{name.replace('_', '-')}", str(value)]
        log(f"{database}: {url}")
        returncode = subprocess.run(command, cwd=tree).returncode
        try:
            with open(out_path) as child_out:
                results["databases"][database] = json.load(child_out)
        except (OSError, ValueError):
            results["databases"][database] = {}
        os.unlink(out_path)
        if returncode:
            results["databases"][database]["error"] = f"the benchmark on {database} failed (exit status {returncode})"
            log(results["databases"][database]["error"])


#: What a server and the benchmark need of the working tree.
SNAPSHOT = ("manage.py", "pyproject.toml", "config", "jobs", "templates", "tests")


def take_snapshot() -> Path:
    """A copy of the working tree's code, so that edits made while the benchmark runs (other
    people work in this checkout) do not mix versions within one run."""
    target = RUN_DIR / "snapshot"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for name in SNAPSHOT:
        source = PROJECT_DIR / name
        if source.is_dir():
            shutil.copytree(source, target / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif source.exists():
            shutil.copy2(source, target / name)
    return target


def code_version(tree: Path) -> dict[str, Any]:
    """The checkout's commit, its uncommitted files, and a digest of the code measured."""
    digest = hashlib.sha256()
    for name in ("config", "jobs", "templates"):
        for path in sorted((tree / name).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                digest.update(str(path.relative_to(tree)).encode() + b"\0" + path.read_bytes())

    def git(*command: str) -> str:
        done = subprocess.run(["git", *command], cwd=PROJECT_DIR, capture_output=True, text=True)
        return done.stdout.strip()

    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "uncommitted": git("status", "--porcelain", "--", "config", "jobs", "templates").splitlines(),
        "digest": digest.hexdigest()[:16],
    }


#: Command-line options that override a size: option (as argparse names it) -> Sizes field.
SIZE_OPTIONS = {"viewers": "viewers", "repeat": "repeat", "replay_lines": "replay_lines", "idle_runs": "idle_runs",
                "fanout_lines": "fanout_lines", "crowd": "crowd_viewers", "burst": "burst_viewers"}  # fmt: skip


def sizes_from(args: argparse.Namespace) -> Sizes:
    sizes = QUICK if args.quick else Sizes()
    changes: dict[str, Any] = {
        size: getattr(args, option) for option, size in SIZE_OPTIONS.items() if getattr(args, option)
    }
    if args.configs:
        changes["configs"] = tuple(args.configs.split(","))
    return Sizes(**{**sizes.__dict__, **changes})


# --- The child: everything on one database --------------------------------------------------------


def run_database(args: argparse.Namespace) -> None:
    """Every section on one database; the figures are saved to args.json after each, so
    that a failure (another user's test restarting PostgreSQL, say) loses only its own."""
    global RUN_DIR
    RUN_DIR = Path(args.run_dir)
    url = args.child
    sizes = sizes_from(args)
    reset_database(url)
    os.environ["DATABASE_URL"] = url
    os.environ["DJANGO_SETTINGS_MODULE"] = SETTINGS
    os.environ.pop("DEBUG", None)
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0, interactive=False)
    bench = Bench(url, sizes, settings.SECRET_KEY, args)
    results: dict[str, Any] = {"database": connection.vendor, "url": url}

    def save() -> None:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=2)

    bench.save = save
    sections = args.sections.split(",")
    failed = False
    try:
        for name, section in (("latency", bench.latency), ("fanout", bench.fanout), ("replay", bench.replay),
                              ("idle", bench.idle), ("growth", bench.growth),
                              ("capacity", bench.capacity)):  # fmt: skip
            if name in sections:
                machine = MachineCpu()
                bench.partial = results[name] = {}
                try:
                    results[name] = section()
                except Exception as exc:  # noqa: BLE001 - recorded, and the next section runs
                    log(f"{name} failed: {exc!r}")
                    results[name]["error"] = repr(exc)
                    failed = True
                # The machine is shared: what every process used meanwhile, in cores.
                results[name]["machine_busy_cores"] = machine.busy_cores()
                save()
    finally:
        from jobs.running.runner import get_runner

        get_runner().stop()
        connection.close()
        drop_database(url)
    if failed:
        sys.exit(1)


def drop_database(url: str) -> None:
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme.startswith("sqlite"):
        for suffix in ("", "-wal", "-shm"):
            Path(f"{parsed.path}{suffix}").unlink(missing_ok=True)
        return
    try:
        with _postgres_admin(parsed) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{parsed.path.lstrip("/")}" WITH (FORCE)')
    except Exception as exc:  # noqa: BLE001 - leftovers are named after their run
        log(f"could not drop {url}: {exc!r}")


def _postgres_admin(parsed: urllib.parse.ParseResult) -> Any:
    import psycopg

    return psycopg.connect(
        host=parsed.hostname, port=parsed.port or 5432, user=parsed.username, dbname="postgres", autocommit=True
    )


def reset_database(url: str) -> None:
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme.startswith("sqlite"):
        path = Path(parsed.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        return
    from psycopg import sql

    name = parsed.path.lstrip("/")
    with _postgres_admin(parsed) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


# --- Servers ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerConfig:
    worker_class: str
    workers: int
    threads: int
    #: config/gunicorn.conf.py as it is, with no GUNICORN_* variable set.
    default: bool = False

    @classmethod
    def parse(cls, text: str) -> ServerConfig:
        """gthread:2x16 (gunicorn's workers x threads), uvicorn:2 (gunicorn's uvicorn workers),
        plain-uvicorn:1 (uvicorn's own processes), waitress:1x16 (threads), or default (the
        config file's)."""
        if text == "default":
            conf = runpy.run_path(str(Path.cwd() / "config/gunicorn.conf.py"))
            return cls(conf["worker_class"], conf["workers"], conf.get("threads", 1), default=True)
        worker_class, _, shape = text.partition(":")
        workers, _, threads = shape.partition("x")
        return cls(worker_class, int(workers), int(threads or 1))

    def __str__(self) -> str:
        shape = f"{self.workers}x{self.threads}" if self.worker_class in ("gthread", "waitress") else f"{self.workers}w"
        return f"{self.worker_class} {shape}{' (default)' if self.default else ''}"


class Server:
    """gunicorn with the project's config file, in its own process group; it serves the code
    of `tree` (by default this checkout's)."""

    def __init__(
        self,
        config: ServerConfig,
        database_url: str,
        secret_key: str,
        label: str,
        env: dict[str, str] | None = None,
        tree: Path = PROJECT_DIR,
        app: str | None = None,
    ) -> None:
        """`app`: the application to serve, for a tree whose gunicorn config names none."""
        self.config = config
        self.port = _free_port()
        self.log_path = RUN_DIR / f"gunicorn-{label}.log"
        #: On PostgreSQL, the application_name of the server's sessions (ServerQueries counts them).
        self.application_name = f"runlog-bench-{os.getpid()}-{label}"
        if not database_url.startswith("sqlite"):
            database_url += f"?application_name={self.application_name}"
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "DJANGO_SETTINGS_MODULE": SETTINGS,
            "SECRET_KEY": secret_key,
            "GUNICORN_WORKERS": str(config.workers),
            "GUNICORN_THREADS": str(config.threads),
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        command = [sys.executable, "-m", "gunicorn", "--config", "config/gunicorn.conf.py",
                   "--bind", f"127.0.0.1:{self.port}"]  # fmt: skip
        if config.default:
            del env["GUNICORN_WORKERS"], env["GUNICORN_THREADS"]
        elif config.worker_class in ("gthread", "uvicorn"):  # the two the config file knows
            env["GUNICORN_WORKER_CLASS"] = config.worker_class
        elif config.worker_class == "plain-uvicorn":  # uvicorn's own command, no gunicorn
            command = [sys.executable, "-m", "uvicorn", "config.asgi:application", "--host", "127.0.0.1",
                       "--port", str(self.port), "--workers", str(config.workers), "--backlog", "4096",
                       "--no-access-log"]  # fmt: skip
        elif config.worker_class == "waitress":  # one process, config.threads threads
            command = [str(Path(sys.executable).with_name("waitress-serve")), "--host=127.0.0.1",
                       f"--port={self.port}", f"--threads={config.threads}", "config.wsgi:application"]  # fmt: skip
        else:
            command += ["config.asgi:application", "--worker-class", config.worker_class]
        self.gunicorn = command[1:3] == ["-m", "gunicorn"]
        if app is not None:
            command.append(app)
        with self.log_path.open("wb") as out:
            self.process = subprocess.Popen(
                command, cwd=tree, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited:\n{self.log_path.read_text(errors='replace')}")
            booted = self.log_path.read_text(errors="replace").count("Booting worker")
            workers = self.config.workers if self.gunicorn else 0
            if booted >= workers and (not self.gunicorn or len(self.worker_pids()) == workers):
                try:
                    status, _ = http_get(self.port, "/admin/login/", timeout=5)
                    if status == 200:
                        time.sleep(1.0)  # every worker has imported the app by now
                        return
                except OSError:
                    pass
            time.sleep(0.1)
        raise RuntimeError(f"gunicorn did not start:\n{self.log_path.read_text(errors='replace')}")

    def worker_pids(self) -> list[int]:
        return _children(self.process.pid)

    def pids(self) -> list[int]:
        return [self.process.pid, *self.worker_pids()]

    def cpu_seconds(self) -> float:
        return sum(_cpu_seconds(pid) for pid in self.pids())

    def rss_mb(self) -> float:
        return sum(_status_kb(pid, "VmRSS") for pid in self.pids()) / 1024

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=45)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _children(parent: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
                pids.append(int(entry))
    return sorted(pids)


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def _status_kb(pid: int | str, name: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        pass
    return inodes


def _established_connections(port: int) -> dict[str, int]:
    """{socket inode: remote port} of the established TCP connections to local port `port`."""
    connections = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "01" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                connections[fields[9]] = int(fields[2].rsplit(":", 1)[1], 16)
    return connections


class MachineCpu:
    """CPU time of the whole machine (all processes), from /proc/stat."""

    def __init__(self) -> None:
        self.started, self.busy = time.monotonic(), self._busy()

    @staticmethod
    def _busy() -> float:
        fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle, iowait
        return (sum(fields[:8]) - idle) / CLOCK_TICKS

    def busy_cores(self) -> float:
        return (self._busy() - self.busy) / (time.monotonic() - self.started)


def reset_peak_rss(pid: int | str) -> None:
    """From now on VmHWM is the peak since this call."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


# --- HTTP from this process (admin pages, the launch form) -----------------------------------------


def http_get(port: int, path: str, cookie: str = "", timeout: float = 120) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path, headers={"Cookie": cookie} if cookie else {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def launch_through_admin(port: int, cookie: str, name: str, params: dict[str, Any]) -> uuid.UUID:
    """POST the admin launch form of `name`, as a browser does; the job runs in the worker
    that answers. Returns the new run's id (from the redirect to its page)."""
    path = f"/admin/jobs/job/launch/{name}/"
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request("GET", path, headers={"Cookie": cookie})
        response = connection.getresponse()
        page = response.read().decode()
        if response.status != 200:
            raise RuntimeError(f"GET {path}: {response.status}")
        csrf_cookie = re.search(r"csrftoken=([^;]+)", response.getheader("Set-Cookie") or "")
        form_token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        if form_token is None:
            raise RuntimeError(f"no CSRF token in {path}")
        cookies = f"{cookie}; csrftoken={csrf_cookie.group(1)}" if csrf_cookie else cookie
        body = urllib.parse.urlencode({**params, "csrfmiddlewaretoken": form_token.group(1)})
        connection.request(
            "POST",
            path,
            body=body,
            headers={
                "Cookie": cookies,
                "Content-Type": "application/x-www-form-urlencoded",
                "Referer": f"http://127.0.0.1:{port}{path}",
                "X-CSRFToken": form_token.group(1),
            },
        )
        response = connection.getresponse()
        response.read()
        location = response.getheader("Location") or ""
        match = re.search(r"/jobs/([0-9a-f-]{36})/", location)
        if response.status != 302 or match is None:
            raise RuntimeError(f"POST {path}: {response.status} {location!r}")
        return uuid.UUID(match.group(1))
    finally:
        connection.close()


# --- Runs in another process ----------------------------------------------------------------------


class Runjob:
    """`manage.py runjob NAME key=value...` in a child process, standing in for a worker: the
    run executes there, and a server's viewers get its lines through the database (the
    server's listener and poller)."""

    def __init__(self, database_url: str, secret_key: str, name: str, params: dict[str, Any]) -> None:
        env = {**os.environ, "DATABASE_URL": database_url, "DJANGO_SETTINGS_MODULE": SETTINGS,
               "SECRET_KEY": secret_key, "PYTHONUNBUFFERED": "1"}  # fmt: skip
        self.log_path = RUN_DIR / f"runjob-{uuid.uuid4().hex[:8]}.log"
        with self.log_path.open("wb") as errors:
            self.process = subprocess.Popen(
                [sys.executable, "manage.py", "runjob", name, *(f"{key}={value}" for key, value in params.items())],
                cwd=PROJECT_DIR, env=env, stdout=subprocess.PIPE, stderr=errors, text=True,
            )  # fmt: skip
        self._job_id: uuid.UUID | None = None

    @property
    def job_id(self) -> uuid.UUID:
        """The run's id, from the permalink runjob prints first (it echoes the run's lines
        after it: they are drained, so that its pipe never fills)."""
        if self._job_id is None:
            assert self.process.stdout is not None
            match = re.search(r"/jobs/([0-9a-f-]{36})/", self.process.stdout.readline())
            if match is None:
                raise RuntimeError(f"runjob printed no permalink: {self.log_path.read_text(errors='replace')}")
            self._job_id = uuid.UUID(match.group(1))
            threading.Thread(target=self.process.stdout.read, daemon=True).start()
        return self._job_id

    def stop(self, *, interrupt: bool = False) -> None:
        """Let runjob exit once its run has ended (unless `interrupt`), or Ctrl-C it (which
        cancels the run); kill it if it still does not exit."""
        signals = (signal.SIGINT, signal.SIGKILL) if interrupt else (None, signal.SIGINT, signal.SIGKILL)
        for signum in signals:
            if signum is not None:
                self.process.send_signal(signum)
            try:
                self.process.wait(timeout=30)
                return
            except subprocess.TimeoutExpired:
                continue


# --- The client process ---------------------------------------------------------------------------


class Client:
    """tests/bench/sse_client.py in a child process."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec_path = RUN_DIR / f"client-{uuid.uuid4().hex}.json"
        self.out_path = self.spec_path.with_suffix(".out.json")
        self.latency_path = self.spec_path.with_suffix(".lat")
        self.spec_path.write_text(json.dumps({"host": "127.0.0.1", "latency_file": str(self.latency_path), **spec}))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.bench.sse_client", str(self.spec_path), str(self.out_path)],
            cwd=PROJECT_DIR,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.ready = threading.Event()
        self.ended = threading.Event()
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.strip() == "ready":
                self.ready.set()
            elif line.strip() == "ended":
                self.ended.set()
        self.ended.set()  # the client exited (or failed): result() tells which

    def result(self, timeout: float) -> dict[str, Any]:
        self.process.wait(timeout=timeout)
        if self.process.returncode != 0:
            raise RuntimeError(f"client failed with {self.process.returncode}")
        result = json.loads(self.out_path.read_text())
        self._latencies = array("d")
        if self.latency_path.exists():
            self._latencies.frombytes(self.latency_path.read_bytes())
        for path in (self.spec_path, self.out_path, self.latency_path):
            path.unlink(missing_ok=True)
        return result

    def latencies(self) -> array:
        """After result(): every stream's print -> arrival latencies, one after the other
        (a stream's are at its latency_offset, latency_count)."""
        return self._latencies

    def stop(self) -> None:
        """End every stream now (the client then reports, as at its timeout)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGUSR1)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for path in (self.spec_path, self.out_path, self.latency_path):
            path.unlink(missing_ok=True)


# --- Samplers -------------------------------------------------------------------------------------


class AdminSampler(threading.Thread):
    """GETs the admin changelist (or each of `pages` in turn), one request at a time on a new
    connection, until stopped; a request that fails or takes `timeout` seconds counts as a
    failure (and as `timeout` seconds)."""

    def __init__(
        self, port: int, cookie: str, interval: float, *, pages: list[str] | None = None, timeout: float = 120
    ) -> None:
        super().__init__(daemon=True)
        self.port, self.cookie, self.interval, self.timeout = port, cookie, interval, timeout
        self.pages = pages or [ADMIN_CHANGELIST]
        self.times: list[float] = []
        self.failures: list[str] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        index = 0
        while not self.stopping.is_set():
            page = self.pages[index % len(self.pages)]
            index += 1
            started = time.perf_counter()
            try:
                status, body = http_get(self.port, page, self.cookie, timeout=self.timeout)
                if status != 200 or (page == ADMIN_CHANGELIST and b"result_list" not in body):
                    self.failures.append(f"{page}: HTTP {status}")
            except OSError as exc:
                self.failures.append(f"{page}: {exc!r}")
            self.times.append(min(time.perf_counter() - started, self.timeout))
            self.stopping.wait(self.interval)

    def stop(self) -> dict[str, Any]:
        self.stopping.set()
        self.join()
        return {**summary(self.times), "failures": len(self.failures), "failed": self.failures[:5]}


class ServerCpu:
    """The CPU time of each of a server's processes (master and workers, /proc) from now to
    stop(): per process in cores (CPU seconds per second), and the wall time between."""

    def __init__(self, server: Server) -> None:
        self.used = {pid: _cpu_seconds(pid) for pid in server.pids()}
        self.started = time.monotonic()
        self.wall = 0.0

    def stop(self) -> dict[int, float]:
        self.wall = time.monotonic() - self.started
        return {pid: (_cpu_seconds(pid) - used) / self.wall for pid, used in self.used.items()}


class ResourceSampler(threading.Thread):
    """The server's RSS, and the client connections each worker holds (and so which worker
    serves which client port), every 0.25 s; each worker's CPU time over the run."""

    def __init__(self, server: Server) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.peak_rss_mb = server.rss_mb()
        self.peak_connections: dict[int, int] = {}
        self.worker_of_port: dict[int, int] = {}
        self.cpu = ServerCpu(server)
        self.cores: dict[int, float] = {}
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(0.25):
            self.peak_rss_mb = max(self.peak_rss_mb, self.server.rss_mb())
            established = _established_connections(self.server.port)
            for pid in self.server.worker_pids():
                sockets = _socket_inodes(pid)
                mine = [port for inode, port in established.items() if inode in sockets]
                self.peak_connections[pid] = max(self.peak_connections.get(pid, 0), len(mine))
                self.worker_of_port.update(dict.fromkeys(mine, pid))

    def stop(self) -> None:
        self.stopping.set()
        self.join()
        self.cores = self.cpu.stop()


class ServerQueries(threading.Thread):
    """PostgreSQL: the queries that a server's sessions start from now to stop(), seen by
    sampling pg_stat_activity every 20 ms (by their application_name): each new query_start
    of a session, and each new session, counts one. Queries less than 20 ms apart on one
    session count once: a lower bound, exact for a poller reading every POLL_INTERVAL."""

    def __init__(self, server: Server) -> None:
        super().__init__(daemon=True)
        self.application_name = server.application_name
        self.stopping = threading.Event()
        self.known = self._sample()
        self.seen: set[tuple[Any, ...]] = set()
        self.started = time.monotonic()

    def _sample(self) -> set[tuple[Any, ...]]:
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pid, backend_start, query_start FROM pg_stat_activity "
                "WHERE datname = current_database() AND application_name = %s",
                [self.application_name],
            )
            return set(cursor.fetchall())

    def run(self) -> None:
        from django.db import connection

        try:
            while not self.stopping.wait(0.02):
                self.seen |= self._sample()
        finally:
            connection.close()

    def stop(self) -> float:
        """Queries per second since the start."""
        self.stopping.set()
        self.join()
        return len(self.seen - self.known) / (time.monotonic() - self.started)


# --- Statistics -----------------------------------------------------------------------------------


def percentile(values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * pct // 100))
    return ordered[int(rank) - 1]


def summary(values: list[float]) -> dict[str, Any]:
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p99": percentile(values, 99),
        "max": max(values) if values else None,
    }


def median(values: list[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None


# --- The benchmark ---------------------------------------------------------------------------------


@dataclass
class Bench:
    url: str
    sizes: Sizes
    secret_key: str
    args: argparse.Namespace
    cookie: str = ""
    servers: int = field(default=0)
    #: The current section's figures so far, and how to save them (set by run_database).
    partial: dict[str, Any] = field(default_factory=dict)
    save: Callable[[], None] = lambda: None
    #: The runjob processes of the current section.
    runjobs: list[Runjob] = field(default_factory=list)

    def __post_init__(self) -> None:
        from django.contrib.auth import get_user_model
        from django.test import Client as DjangoClient
        from django.utils import timezone

        from jobs.models import Job, JobStatus

        user = get_user_model().objects.create_superuser("bench", "bench@example.com", "bench-password")
        client = DjangoClient()
        client.force_login(user)
        self.cookie = f"sessionid={client.cookies['sessionid'].value}"
        # A changelist with a full page: 200 finished runs.
        now = timezone.now()
        Job.objects.bulk_create(
            Job(name="demo.count", params={"n": 10}, status=JobStatus.SUCCEEDED, launched_by=user,
                created_at=now, started_at=now, finished_at=now, line_count=11)
            for _ in range(200)
        )  # fmt: skip

    def server(self, config: ServerConfig, env: dict[str, str] | None = None) -> Server:
        """A server of `config`, with `env` added to its environment (e.g. RUNLOG_WORKERS)."""
        self.servers += 1
        label = re.sub(r"[^\w.-]+", "-", str(config)).strip("-")
        return Server(config, self.url, self.secret_key, f"{self.servers}-{label}", env)

    # --- 1. Latency -----------------------------------------------------------------------------

    def latency(self) -> dict[str, Any]:
        """Each case once per round, --repeat rounds. The job in another process is a
        runjob: on PostgreSQL its lines come by NOTIFY, and again (to compare) to a server
        with RUNLOG_NOTIFY off, whose poller reads every POLL_INTERVAL; SQLite polls."""
        sizes = self.sizes
        params = {"n": sizes.latency_lines, "interval": sizes.latency_interval, "delay": 1.0}
        cases = ["in_process", "other_process", *(["other_process_poll"] if self.postgresql else []), "loopback"]
        runs: dict[str, list[dict[str, Any]]] = {case: [] for case in cases}
        server = self.server(ServerConfig("gthread", 1, 16))
        poll_server = self.server(ServerConfig("gthread", 1, 16), POLL_ONLY) if self.postgresql else None
        try:
            for index in range(sizes.repeat):
                log(f"latency {index + 1}/{sizes.repeat}: loopback baseline")
                runs["loopback"].append(self._loopback(sizes.latency_lines, sizes.latency_interval))
                log(f"latency {index + 1}/{sizes.repeat}: job in the serving process")
                job_id = launch_through_admin(server.port, self.cookie, "bench.clock", params)
                runs["in_process"].append(self._one_viewer(server, job_id))
                log(f"latency {index + 1}/{sizes.repeat}: job in another process (runjob)")
                runs["other_process"].append(self._one_viewer(server, self._runjob("bench.clock", params)))
                if poll_server is not None:
                    log(f"latency {index + 1}/{sizes.repeat}: job in another process, poll only")
                    job_id = self._runjob("bench.clock", params)
                    runs["other_process_poll"].append(self._one_viewer(poll_server, job_id))
        finally:
            server.stop()
            if poll_server is not None:
                poll_server.stop()
            self._stop_runjobs()
        result: dict[str, Any] = {"server": str(server.config), "lines": sizes.latency_lines,
                                  "interval": sizes.latency_interval, "repeat": sizes.repeat,
                                  "other_process_by": "notify" if self.postgresql else "poll"}  # fmt: skip
        for case, case_runs in runs.items():
            result[case] = {
                measure: _median_stats([run[measure] for run in case_runs])
                for measure in case_runs[0]
                if measure != "excluded"
            }
            result[case]["samples"] = sum(run["print_to_arrival"]["n"] for run in case_runs)
            result[case]["excluded_replayed_lines"] = sum(run.get("excluded", 0) for run in case_runs)
        return result

    @property
    def postgresql(self) -> bool:
        return not self.url.startswith("sqlite")

    def _runjob(self, name: str, params: dict[str, Any]) -> uuid.UUID:
        """Run `name` in a runjob of its own (stopped by _stop_runjobs); its run's id."""
        runjob = Runjob(self.url, self.secret_key, name, params)
        self.runjobs.append(runjob)
        return runjob.job_id

    def _stop_runjobs(self, *, interrupt: bool = False) -> None:
        for runjob in self.runjobs:
            runjob.stop(interrupt=interrupt)
        self.runjobs.clear()

    def _one_viewer(self, server: Server, job_id: uuid.UUID) -> dict[str, Any]:
        client = Client(
            {"port": server.port, "cookie": self.cookie, "paths": [f"/jobs/{job_id}/events"], "mode": "sse",
             "timeout": 600, "clock_lines": True}
        )  # fmt: skip
        out = client.result(timeout=660)
        stream = out["streams"][0]
        expected = self._expected(job_id)
        if not _stream_complete(stream, expected):
            raise RuntimeError(f"viewer of {job_id} did not get every line: {stream}")
        latency = out["latency"]
        return {
            "print_to_arrival": latency["print_to_arrival"],
            "print_to_t": latency["print_to_t"],
            "t_to_arrival": latency["t_to_arrival"],
            "excluded": latency["excluded_replayed_lines"],
        }

    def _loopback(self, lines: int, interval: float) -> dict[str, Any]:
        """The floor: the job's loop (time.time(), write, Event.wait(interval)) writing to a
        bare loopback TCP socket read by the same client process."""
        listener = socket.create_server(("127.0.0.1", 0))
        port = listener.getsockname()[1]

        def serve() -> None:
            connection, _ = listener.accept()
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            pause = threading.Event()
            pause.wait(1.0)
            for _ in range(lines):
                connection.sendall(f"{time.time():.6f}\n".encode())
                pause.wait(interval)
            connection.sendall(b"end\n")
            connection.close()
            listener.close()

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        client = Client({"port": port, "cookie": "", "paths": ["-"], "mode": "clock", "timeout": 600})
        out = client.result(timeout=660)
        thread.join()
        return {"print_to_arrival": out["latency"]["print_to_arrival"]}

    def _expected(self, job_id: uuid.UUID) -> dict[str, Any]:
        """Digests of the run's stored lines, as the client computes them."""
        from jobs.models import Job, LogLine

        job = Job.objects.get(pk=job_id)
        while not job.is_finished:
            time.sleep(0.1)
            job.refresh_from_db()
        sse, text = hashlib.sha256(), hashlib.sha256()
        after = 0
        while True:
            rows = LogLine.objects.rows_after(job_id, after, 20_000)
            for number, stream, _, line in rows:
                sse.update(f"{number}\t{stream}\t{line}\n".encode())
                text.update(f"{line}\n".encode())
            if len(rows) < 20_000:
                break
            after = rows[-1][0]
        # The job's own rate: its lines over its running time, less bench.clock's delay.
        running = (job.finished_at - job.started_at).total_seconds() - float(job.params.get("delay", 0))
        return {"lines": job.line_count, "sse_digest": sse.hexdigest(), "text_digest": text.hexdigest(),
                "status": job.status, "worker": job.worker,
                "lines_per_s": job.line_count / running if running > 0 else None}  # fmt: skip

    # --- 2. Fan-out ------------------------------------------------------------------------------

    def fanout(self) -> dict[str, Any]:
        results: list[dict[str, Any]] = []
        self.partial.update({"viewers": self.sizes.viewers, "lines": self.sizes.fanout_lines,
                             "interval": self.sizes.fanout_interval, "runs": results})  # fmt: skip
        for index, text in enumerate(self.sizes.configs):
            config = ServerConfig.parse(text)
            log(f"fan-out: {config}, {self.sizes.viewers} viewers")
            result: dict[str, Any] = {"config": str(config), "worker_class": config.worker_class,
                                      "workers": config.workers, "threads": config.threads}  # fmt: skip
            results.append(result)
            try:
                server = self.server(config, _todays(config))
                try:
                    admin = AdminSampler(server.port, self.cookie, 0.0)
                    admin.start()
                    time.sleep(5 if len(self.sizes.configs) > 1 or self.sizes.viewers > 20 else 1)
                    result["admin_idle"] = admin.stop()
                    if index == 0:
                        log("fan-out: the same job with no viewer (CPU baseline)")
                        result["no_viewer"] = self._job_alone(server)
                    result.update(self._fanout_run(server))
                finally:
                    server.stop()
                    self._stop_runjobs()
            except Exception as exc:  # noqa: BLE001 - recorded; the next configuration runs
                log(f"fan-out {config} failed: {exc!r}")
                result["error"] = repr(exc)
            self.save()
        return self.partial

    def _fanout_params(self) -> dict[str, Any]:
        sizes = self.sizes
        return {"n": sizes.fanout_lines, "interval": sizes.fanout_interval, "delay": sizes.fanout_delay}

    def _fanout_job(self, server: Server) -> uuid.UUID:
        if self.sizes.fanout_job_in == "runjob":
            return self._runjob("bench.clock", self._fanout_params())
        return launch_through_admin(server.port, self.cookie, "bench.clock", self._fanout_params())

    def _job_alone(self, server: Server) -> dict[str, Any]:
        from jobs.models import Job

        cpu = server.cpu_seconds()
        started = time.time()
        job_id = self._fanout_job(server)
        job = Job.objects.get(pk=job_id)
        while not job.is_finished:
            time.sleep(0.05)
            job.refresh_from_db()
        wall = time.time() - started - self.sizes.fanout_delay
        used = server.cpu_seconds() - cpu
        return {"server_cpu_s": used, "wall_s": wall, "server_cores": used / wall}

    def _fanout_run(self, server: Server) -> dict[str, Any]:
        sizes = self.sizes
        profile = self._start_profile(server, "fanout")
        cpu_before, rss_before = server.cpu_seconds(), server.rss_mb()
        database_before = _database_activity()
        machine = MachineCpu()
        launched = time.time()
        job_id = self._fanout_job(server)
        paths = [f"/jobs/{job_id}/events"] * sizes.viewers
        client = Client({"port": server.port, "cookie": self.cookie, "paths": paths, "mode": "sse",
                         "timeout": 900, "clock_lines": True})  # fmt: skip
        # Sample from the first connection to the last stream's end.
        admin = AdminSampler(server.port, self.cookie, sizes.admin_interval)
        resources = ResourceSampler(server)
        admin.start()
        resources.start()
        bench_cpu = time.process_time()
        ready = client.ready.wait(max(0.0, launched + sizes.fanout_delay - time.time()))
        if not client.ended.wait(timeout=960):
            client.kill()
            raise RuntimeError("the viewers did not finish in 960 s")
        # Every stream has ended: stop the clocks before the client parses.
        finished = time.time()
        machine_cores = machine.busy_cores()
        bench_cores = (time.process_time() - bench_cpu) / (finished - launched)
        database_after = _database_activity()
        admin_load = admin.stop()
        resources.stop()
        out = client.result(timeout=960)
        all_latencies = client.latencies()
        cpu = server.cpu_seconds() - cpu_before
        self._stop_profile(profile)
        expected = self._expected(job_id)
        streams = out["streams"]
        complete = [stream for stream in streams if _stream_complete(stream, expected)]
        ttfb = [stream["first_byte"] - stream["sent_at"] for stream in streams if stream["first_byte"]]
        stream_p99 = [stream["p99"] for stream in streams if stream.get("p99") is not None]
        worker_pid = _worker_pid(expected)
        return {
            "latency_by_worker": _latency_by_worker(streams, all_latencies, resources, lambda _: worker_pid),
            "worker_cores": {str(pid): cores for pid, cores in resources.cores.items()},
            "all_connected_before_first_line": ready,
            "viewers_complete": len(complete),
            "lines_expected": expected["lines"],
            "lines_delivered": sum(stream.get("lines", 0) for stream in streams),
            "min_lines_per_viewer": min(stream.get("lines", 0) for stream in streams),
            "latency": out["latency"],
            "worst_viewer_p99": max(stream_p99) if stream_p99 else None,
            "ttfb": summary(ttfb),
            "viewers_waiting_over_1s": sum(1 for value in ttfb if value > 1.0),
            "server_cpu_s": cpu,
            "wall_s": finished - launched,
            "server_cores": sum(resources.cores.values()),
            "rss_before_mb": rss_before,
            "rss_peak_mb": resources.peak_rss_mb,
            "connections_per_worker": {str(pid): count for pid, count in resources.peak_connections.items()},
            "job_ran_in_worker": worker_pid,
            "job_lines_per_s": expected["lines_per_s"],
            "admin_under_load": admin_load,
            "client_cpu_share": out["client_cpu_share"],
            "machine_busy_cores": machine_cores,
            "bench_process_cores": bench_cores,
            # PostgreSQL only: transactions (autocommit queries, mostly) and sessions opened,
            # per second, by every process on the benchmark database (pg_stat_database).
            "database_per_s": {
                name: (database_after[name] - database_before[name]) / (finished - launched) for name in database_before
            },
            # Everything else on this shared machine meanwhile (other people's work).
            "other_processes_cores": machine_cores
            - sum(resources.cores.values())
            - out["client_cpu_share"]
            - bench_cores,
        }

    # --- 3. Replay ----------------------------------------------------------------------------------

    def replay(self) -> dict[str, Any]:
        """Two phases: the run as it is right after it was written (PostgreSQL has no
        statistics for the new rows yet, and autovacuum may be slow or, as here, off), once;
        then after ANALYZE, --repeat times, with the in-process baselines."""
        from django.db import connection

        from jobs.launcher import create_run
        from jobs.models import JobStatus
        from jobs.running.runner import start

        lines = self.sizes.replay_lines
        log(f"replay: creating a {lines:,}-line run (demo.flood in this process)")
        started = time.perf_counter()
        job = start().run(create_run("demo.flood", {"lines": lines, "width": 80}))
        created_in = time.perf_counter() - started
        assert job.status == JobStatus.SUCCEEDED, job.error
        expected = self._expected(job.id)
        result = self.partial
        result.update(lines=lines, created_in_s=created_in)
        server = self.server(ServerConfig("gthread", 1, 16))
        result["server"] = str(server.config)
        try:
            worker = server.worker_pids()[0]
            # Warm the worker up (imports, first connection) on the same path, 10 lines.
            http_get(server.port, f"/jobs/{job.id}/log.txt?offset={lines - 10}", self.cookie)
            for phase, repeat in (("fresh", 1), ("analyzed", self.sizes.repeat)):
                if phase == "analyzed":
                    with connection.cursor() as cursor:
                        cursor.execute("ANALYZE")
                requests: dict[str, list[dict[str, Any]]] = {"log.txt": [], "events": []}
                for index in range(repeat):
                    for kind in requests:
                        log(f"replay ({phase}) {index + 1}/{repeat}: {kind}")
                        requests[kind].append(self._replay_request(server, worker, job.id, kind, expected))
                result[phase] = {kind: _replay_summary(runs) for kind, runs in requests.items()}
                if phase == "fresh":
                    result[phase].update(self._replay_baselines(job.id, lines, ["rows_after_chunks"], 1))
                self.save()
        finally:
            server.stop()
        result["analyzed"].update(self._replay_baselines(job.id, lines, None, self.sizes.repeat))
        return result

    def _replay_request(
        self, server: Server, worker: int, job_id: uuid.UUID, kind: str, expected: dict[str, Any]
    ) -> dict[str, Any]:
        mode = "text" if kind == "log.txt" else "sse"
        profile = self._start_profile(server, f"replay-{kind}")
        reset_peak_rss(worker)
        before = _status_kb(worker, "VmRSS")
        out = Client({"port": server.port, "cookie": self.cookie, "paths": [f"/jobs/{job_id}/{kind}"],
                      "mode": mode, "timeout": 600}).result(timeout=660)  # fmt: skip
        peak = _status_kb(worker, "VmHWM")
        self._stop_profile(profile)
        stream = out["streams"][0]
        seconds = stream["last_byte"] - stream["sent_at"]
        return {
            "lines_per_s": expected["lines"] / seconds,
            "seconds": seconds,
            "ttfb_s": stream["first_byte"] - stream["sent_at"],
            "rss_before_mb": before / 1024,
            "rss_growth_mb": (peak - before) / 1024,
            "exact": _stream_complete(stream, expected, text=mode == "text"),
            "bytes": stream["bytes"],
        }

    def _replay_baselines(self, job_id: uuid.UUID, lines: int, only: list[str] | None, repeat: int) -> dict[str, Any]:
        """The same reads in this process, each on a new database connection (as a request
        gets), without HTTP: rows_after in REPLAY_CHUNK chunks alone, then with each wire
        format; and the naive baseline, list(job.lines.all())."""
        from django.db import connection

        from jobs.models import Job, LogLine
        from jobs.streaming import formats
        from jobs.streaming.follow import REPLAY_CHUNK, Lines

        def chunked(encode: Callable[[Lines], bytes] | None) -> Callable[[], int]:
            def read() -> int:
                after, count = 0, 0
                while True:
                    rows = LogLine.objects.rows_after(job_id, after, REPLAY_CHUNK)
                    if encode is not None:
                        encode(Lines(rows))
                    count += len(rows)
                    if len(rows) < REPLAY_CHUNK:
                        return count
                    after = rows[-1][0]

            return read

        def materialise() -> int:
            return len(list(Job.objects.get(pk=job_id).lines.all()))

        cases = {
            "rows_after_chunks": chunked(None),
            "rows_after_plain_text": chunked(formats.plain_text),
            "rows_after_sse": chunked(formats.sse),
            "list_lines_all": materialise,
        }
        results: dict[str, Any] = {}
        for name, call in cases.items():
            if only is not None and name not in only:
                continue
            log(f"replay baseline: {name}")
            runs = []
            for _ in range(repeat):
                connection.close()
                reset_peak_rss("self")
                before = _status_kb("self", "VmRSS")
                started = time.perf_counter()
                count = call()
                seconds = time.perf_counter() - started
                growth = (_status_kb("self", "VmHWM") - before) / 1024
                assert count == lines, (name, count)
                runs.append((lines / seconds, growth))
            results[name] = {
                "lines_per_s": statistics.median(rate for rate, _ in runs),
                "rss_growth_mb": max(growth for _, growth in runs),
            }
        connection.close()
        return results

    # --- 4. Idle --------------------------------------------------------------------------------------

    def idle(self) -> dict[str, Any]:
        """Server CPU (and on PostgreSQL the database's transactions) while VIEWERS viewers
        follow runs that print nothing: the run in the serving process; runs in runjob
        processes (on PostgreSQL: with NOTIFY, then polling only); against the server's
        floor (the runs going, no viewer yet) and the seed's get_nowait loop (last: it
        saturates the machine)."""
        sizes = self.sizes
        window, allowance = sizes.idle_window, sizes.idle_allowance
        result = self.partial
        result.update(viewers=sizes.viewers, runs=sizes.idle_runs, window_s=window, job="bench.silent", cases={
            "floor": "the job of in_process running, before its viewers connect: no viewer",
            "in_process": "job launched through the admin form: runs in a server worker",
            "other_process": "idle_runs runs, each in a runjob, to a server of their own with a quiet supervisor: "
                             "on PostgreSQL it hears of them by NOTIFY, on SQLite its poller reads them every "
                             "POLL_INTERVAL; its floor: the same, no viewer",
            "other_process_poll": "PostgreSQL: the same, to a server with RUNLOG_NOTIFY off (the poller reads)",
            "seed_baseline": "tests/bench/baseline_views.py: the seed's get_nowait loop, one thread per viewer",
        })  # fmt: skip
        server = self.server(ServerConfig.parse("default"))
        result["server"] = str(server.config)
        try:
            log("idle: a silent job in the server, no viewer (the server's floor)")
            # Silent for the floor's window, then for connecting the viewers and their window.
            params = {"seconds": window + allowance + IDLE_SETTLE + window + IDLE_MARGIN}
            job_id = launch_through_admin(server.port, self.cookie, "bench.silent", params)
            silent_until = self._silent_until(job_id)
            result["floor"] = self._cpu_window(server, window, "idle-floor")
            self.save()
            log(f"idle: {sizes.viewers} viewers, job in the serving process")
            result["in_process"] = self._idle_viewers(server, [job_id], silent_until, "idle-in-process")
            self.save()
            cases = [("other_process", {})] + ([("other_process_poll", POLL_ONLY)] if self.postgresql else [])
            for case, env in cases:
                log(f"idle: {sizes.viewers} viewers of {sizes.idle_runs} runs in runjob processes {env}")
                remote_server = self.server(ServerConfig.parse("default"), {**QUIET_SUPERVISOR, **env})
                try:
                    result[case] = self._idle_remote(remote_server, f"idle-{case}")
                finally:
                    remote_server.stop()
                self.save()
            log(f"idle: baseline, {sizes.viewers} viewers of the seed's get_nowait loop")
            result["seed_baseline"] = self._idle_seed(server)
        finally:
            server.stop()
            self._stop_runjobs()
        return result

    def _idle_remote(self, server: Server, label: str) -> dict[str, Any]:
        """idle_runs silent runs, each in a runjob: the server's floor with the runs going
        and no viewer (their own supervisors' queries are in the database's), then VIEWERS
        viewers spread over them."""
        sizes = self.sizes
        window, allowance = sizes.idle_window, sizes.idle_allowance
        # Silent for starting the runjobs, the floor, connecting the viewers and their window.
        params = {"seconds": allowance + window + allowance + IDLE_SETTLE + window + IDLE_MARGIN}
        job_ids = [self._runjob("bench.silent", params) for _ in range(sizes.idle_runs)]
        silent_until = min(self._silent_until(job_id) for job_id in job_ids)
        floor = self._cpu_window(server, window, f"{label}-floor")
        measured = self._idle_viewers(server, job_ids, silent_until, label)
        self._stop_runjobs()
        return {**measured, "floor": floor}

    def _silent_until(self, job_id: uuid.UUID) -> float:
        """When bench.silent `job_id` ends its silence (at the earliest), once it has printed
        its first line."""
        from jobs.models import Job

        deadline = time.monotonic() + 60
        job = Job.objects.get(pk=job_id)
        while job.line_count < 1 or job.started_at is None:
            if job.is_finished or time.monotonic() > deadline:
                raise RuntimeError(f"bench.silent {job_id} did not start: {job.status} {job.error}")
            time.sleep(0.05)
            job.refresh_from_db()
        return job.started_at.timestamp() + float(job.params["seconds"])

    def _cpu_window(self, server: Server, seconds: float, label: str) -> dict[str, Any]:
        """The server's CPU over the next `seconds`, as % of one core: per process, in all
        (profiled as `label` with --profile)."""
        started = time.time()
        queries = ServerQueries(server) if self.postgresql else None
        resources = ResourceSampler(server)
        resources.start()
        if queries is not None:
            queries.start()
        profile = self._start_profile(server, label)
        time.sleep(seconds)
        server_queries = queries.stop() if queries is not None else None
        self._stop_profile(profile)
        resources.stop()
        return {
            "window_s": resources.cpu.wall,
            "window_start": started,
            "window_end": time.time(),
            "cpu_pct": 100 * sum(resources.cores.values()),
            "cpu_pct_per_process": {str(pid): 100 * cores for pid, cores in resources.cores.items()},
            "connections_per_worker": {str(pid): count for pid, count in resources.peak_connections.items()},
            "server_queries_per_s": server_queries,  # PostgreSQL only
        }

    def _viewers_window(
        self, server: Server, paths: list[str], until: float, label: str, *, wait_all: bool = True
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Connect a viewer per path; once all have their first bytes (and a moment to settle:
        replay, subscribe), the server's CPU over the window (cut short to end before `until`,
        when the streams' source ends its silence); then the viewers' results once every stream
        has ended. Without `wait_all` the window starts after idle_allowance at the latest,
        however many viewers have their first bytes by then. Returns (the CPU window, the
        client's output)."""
        started = time.time()
        client = Client({"port": server.port, "cookie": self.cookie, "paths": paths, "mode": "sse",
                         "timeout": until - started + 120})  # fmt: skip
        try:
            wait = until - started if wait_all else self.sizes.idle_allowance
            ready = client.ready.wait(timeout=max(0.0, wait))
            if not ready and wait_all:
                raise RuntimeError(f"the {len(paths)} viewers did not all get their first bytes in {wait:.1f} s")
            connected = time.time() - started
            time.sleep(IDLE_SETTLE)
            window = min(self.sizes.idle_window, until - IDLE_MARGIN - time.time())
            if window < self.sizes.idle_window / 2:
                raise RuntimeError(f"the viewers took {connected:.1f} s to connect: no time left for the window")
            measured = {**self._cpu_window(server, window, label), "connect_s": connected, "all_connected": ready}
            if not client.ended.wait(timeout=until - time.time() + 60):
                raise RuntimeError("the streams did not end within 60 s of the silence's end")
            out = client.result(timeout=120)
        finally:
            client.kill()
        streams = out["streams"]
        firsts = [stream["first_byte"] for stream in streams if stream["first_byte"]]
        measured.update(
            first_bytes_by_window_start=sum(1 for first in firsts if first <= measured["window_start"]),
            first_bytes_by_window_end=sum(1 for first in firsts if first <= measured["window_end"]),
            ttfb=summary([stream["first_byte"] - stream["sent_at"] for stream in streams if stream["first_byte"]]),
            heartbeats_per_viewer={"min": min(stream.get("comments", 0) for stream in streams),
                                   "max": max(stream.get("comments", 0) for stream in streams)},
            bytes_per_viewer=median([stream["bytes"] for stream in streams]),
            connected_s=median([stream["ended"] - stream["sent_at"] for stream in streams if stream["ended"]]),
            client_cpu_share=out["client_cpu_share"],
        )  # fmt: skip
        return measured, out

    def _idle_viewers(
        self, server: Server, job_ids: list[uuid.UUID], silent_until: float, label: str
    ) -> dict[str, Any]:
        from jobs.models import LogLine

        paths = [f"/jobs/{job_ids[index % len(job_ids)]}/events" for index in range(self.sizes.viewers)]
        measured, out = self._viewers_window(server, paths, silent_until, label)
        expected = {str(job_id): self._expected(job_id) for job_id in job_ids}
        # "Done", line 2 of each run, ends its silence.
        done_lines = LogLine.objects.filter(job_id__in=job_ids, number=2).values_list("created_at", flat=True)
        measured.update(
            silent_during_window=min(done.timestamp() for done in done_lines) > measured["window_end"],
            viewers_complete=sum(
                1 for stream in out["streams"] if _stream_complete(stream, expected[stream["path"].split("/")[2]])
            ),
            lines_expected=sum(item["lines"] for item in expected.values()),
            job_ran_in_worker=_worker_pid(expected[str(job_ids[0])]),
        )
        return measured

    def _idle_seed(self, server: Server) -> dict[str, Any]:
        """The seed's loop (tests/bench/baseline_views.py): its threads spin until `until`,
        the end of the window. Its spinning threads starve the workers' other threads (a new
        request waits for the GIL behind all of them): 200 viewers take longer to get their
        first bytes than the window lasts, so the window starts after idle_allowance anyway
        and the figures say how many had their first bytes by its start and its end."""
        until = time.time() + self.sizes.idle_allowance + IDLE_SETTLE + self.sizes.idle_window + IDLE_MARGIN
        paths = [f"/bench/seed-stream?until={until:.3f}"] * self.sizes.viewers
        measured, out = self._viewers_window(server, paths, until, "idle-seed", wait_all=False)
        measured["viewers_complete"] = sum(
            1 for stream in out["streams"] if stream.get("status") == 200 and stream.get("done_status") == "succeeded"
        )
        return measured

    # --- 6. Capacity ----------------------------------------------------------------------------------

    def capacity(self) -> dict[str, Any]:
        """Per configuration (--configs; gthread without a stream limit, as it ran before
        there was one), a fresh server and a silent run in a runjob process: the burst
        (burst_viewers stream connections opened at once: time to first bytes, answers)
        while pages are loaded, then the crowd (crowd_viewers idle streams held open: how
        many were served, refused or left unanswered, the server's memory per stream, and
        page loads meanwhile)."""
        sizes = self.sizes
        results: list[dict[str, Any]] = []
        self.partial.update(crowd_viewers=sizes.crowd_viewers, burst_viewers=sizes.burst_viewers,
                            window_s=sizes.capacity_window, page_timeout_s=sizes.page_timeout,
                            pages=list(CAPACITY_PAGES), runs=results)  # fmt: skip
        for text in sizes.configs:
            config = ServerConfig.parse(text)
            result: dict[str, Any] = {"config": str(config)}
            results.append(result)
            server = self.server(config, _todays(config))
            try:
                seconds = 4 * (sizes.connect_allowance + sizes.capacity_window) + 60
                job_id = self._runjob("bench.silent", {"seconds": seconds})
                self._silent_until(job_id)
                result["idle_rss_mb"] = server.rss_mb()
                log(f"capacity: {config}, a burst of {sizes.burst_viewers} streams")
                profile = self._start_profile(server, "burst")
                result["burst"] = self._streams_and_pages(server, job_id, sizes.burst_viewers, wait_ready=False)
                self._stop_profile(profile)
                self.save()
                log(f"capacity: {config}, a crowd of {sizes.crowd_viewers} idle streams")
                result["crowd"] = self._streams_and_pages(server, job_id, sizes.crowd_viewers, wait_ready=True)
            except Exception as exc:  # noqa: BLE001 - recorded; the next configuration runs
                log(f"capacity {config} failed: {exc!r}")
                result["error"] = repr(exc)
            finally:
                server.stop()
                self._stop_runjobs(interrupt=True)  # its silence outlasts the section on purpose
            self.save()
        return self.partial

    def _streams_and_pages(self, server: Server, job_id: uuid.UUID, count: int, *, wait_ready: bool) -> dict[str, Any]:
        """`count` streams of the run, connected at once, and pages loaded one after the other
        meanwhile: from the first connection on (the burst), or once every stream has its
        first bytes (at most connect_allowance: the crowd) for capacity_window seconds."""
        sizes = self.sizes
        rss_before = server.rss_mb()
        paths = [f"/jobs/{job_id}/events"] * count
        timeout = sizes.connect_allowance + sizes.capacity_window + sizes.page_timeout
        client = Client({"port": server.port, "cookie": self.cookie, "paths": paths, "mode": "sse",
                         "timeout": timeout})  # fmt: skip
        try:
            pages = [path.format(job=job_id) for path in CAPACITY_PAGES]
            sampler = AdminSampler(server.port, self.cookie, 0.0, pages=pages, timeout=sizes.page_timeout)
            connected = time.time()
            if wait_ready:
                client.ready.wait(sizes.connect_allowance)
                connected = time.time()
            sampler.start()
            time.sleep(sizes.capacity_window)
            rss_held = server.rss_mb()
            page_loads = sampler.stop()
            client.stop()
            out = client.result(timeout=timeout + 60)
        finally:
            client.kill()
        streams = out["streams"]
        served = [stream for stream in streams if stream.get("status") == 200]
        ttfb = [stream["first_byte"] - stream["sent_at"] for stream in streams if stream["first_byte"]]
        return {
            "streams": count,
            "served": len(served),
            "refused_503": sum(1 for stream in streams if stream.get("status") == 503),
            "unanswered": sum(1 for stream in streams if not stream["first_byte"]),
            "first_bytes": summary(ttfb),
            "connect_s": connected - min(stream["sent_at"] for stream in streams),
            "pages": page_loads,
            "rss_growth_mb": rss_held - rss_before,
            "kb_per_served_stream": 1024 * (rss_held - rss_before) / len(served) if served else None,
        }

    # --- 5. Growth ------------------------------------------------------------------------------------

    def growth(self) -> dict[str, Any]:
        """Every case --repeat times, round after round (the shared machine's noise then falls
        on every case alike); a case's figures are the medians of its runs."""
        sizes = self.sizes
        runners = max(sizes.growth_jobs)
        result = self.partial
        result.update(job_counts=list(sizes.growth_jobs), total_lines=sizes.growth_lines,
                      split="a fixed total of lines, split evenly among the jobs", runlog_workers=runners,
                      repeat=sizes.repeat, runs=[])  # fmt: skip
        # Enough runner threads that every job runs at once, whichever worker takes them.
        server = self.server(ServerConfig.parse("default"), {"RUNLOG_WORKERS": str(runners)})
        result["server"] = str(server.config)
        # (jobs, with viewers): the baseline with no viewer comes after the first case, so
        # that neither runs on a cold server.
        first, *others = sizes.growth_jobs
        cases = [(first, True), (1, False), *((count, True) for count in others)]
        runs: dict[tuple[int, bool], list[dict[str, Any]]] = {case: [] for case in cases}
        try:
            for index in range(sizes.repeat):
                for count, viewers in cases:
                    log(f"growth {index + 1}/{sizes.repeat}: {count} job(s) flooding at once, "
                        f"{'one viewer each' if viewers else 'no viewer'}")  # fmt: skip
                    try:
                        runs[count, viewers].append(self._flood(server, count, viewers=viewers))
                    except Exception as exc:  # noqa: BLE001 - recorded; the next case runs
                        log(f"growth: {count} job(s) failed: {exc!r}")
                        runs[count, viewers].append({"jobs": count, "error": repr(exc)})
                    result["runs"] = [_flood_summary(runs[count, True]) for count in sizes.growth_jobs
                                      if runs[count, True]]  # fmt: skip
                    if runs[1, False]:
                        result["no_viewer"] = _flood_summary(runs[1, False])
                    self.save()
        finally:
            server.stop()
        one = next((run for run in result["runs"] if run["jobs"] == 1 and "lines_per_s" in run), None)
        for run in result["runs"]:
            run["vs_1_job"] = run["lines_per_s"] / one["lines_per_s"] if one and "lines_per_s" in run else None
        if one and "lines_per_s" in result.get("no_viewer", {}):  # below 1: what one viewer costs the capture
            result["one_viewer_vs_none"] = one["lines_per_s"] / result["no_viewer"]["lines_per_s"]
        return result

    def _flood(self, server: Server, count: int, *, viewers: bool) -> dict[str, Any]:
        """`count` bench.flood_clock jobs sharing the growth section's lines, launched through
        the admin form one after the other and starting to print at one shared moment; with
        one viewer each, connected before that moment."""
        from jobs.models import Job, JobStatus

        lines = self.sizes.growth_lines // count
        start_at = time.time() + self.sizes.growth_allowance + 0.1 * count  # a launch takes tens of ms
        params = {"n": lines, "start_at": f"{start_at:.6f}"}
        job_ids = [launch_through_admin(server.port, self.cookie, "bench.flood_clock", params) for _ in range(count)]
        launched_before_start = time.time() < start_at
        resources = ResourceSampler(server)  # which worker serves which viewer
        resources.start()
        client = None
        connected = False
        if viewers:
            paths = [f"/jobs/{job_id}/events" for job_id in job_ids]
            client = Client({"port": server.port, "cookie": self.cookie, "paths": paths, "mode": "sse",
                             "timeout": 600, "clock_lines": True})  # fmt: skip
        try:
            if client is not None:
                connected = client.ready.wait(max(0.0, start_at - time.time()))
            time.sleep(max(0.0, start_at - time.time()))
            cpu, machine = ServerCpu(server), MachineCpu()
            # To the last viewer's end (every line delivered), or with no viewer the last job's.
            deadline = time.monotonic() + 600
            if client is not None:
                if not client.ended.wait(timeout=600):
                    raise RuntimeError("the viewers did not finish in 600 s")
            else:
                finished = Job.objects.filter(pk__in=job_ids, status__in=JobStatus.finished_values())
                while finished.count() < count:
                    if time.monotonic() > deadline:
                        raise RuntimeError("the jobs did not finish in 600 s")
                    time.sleep(0.05)
            cores = cpu.stop()
            machine_cores = machine.busy_cores()
            resources.stop()
            out = client.result(timeout=600) if client is not None else None
        finally:
            resources.stopping.set()
            if client is not None:
                client.kill()
        expected = {str(job_id): self._expected(job_id) for job_id in job_ids}
        jobs = Job.objects.in_bulk(job_ids).values()
        # Lines stored over the time from the first job's start to the last one's end.
        starts = {job.pk: max(job.started_at.timestamp(), start_at) for job in jobs}
        ends = {job.pk: job.finished_at.timestamp() for job in jobs}
        stored = sum(job.line_count for job in jobs)
        wall = max(ends.values()) - min(starts.values())
        cpu_s = sum(cores.values()) * cpu.wall
        result: dict[str, Any] = {
            "jobs": count,
            "lines_per_job": lines,
            "lines_stored": stored,
            "all_succeeded": all(job.status == JobStatus.SUCCEEDED for job in jobs),
            "launched_before_start": launched_before_start,
            "wall_s": wall,
            "lines_per_s": stored / wall,
            "job_lines_per_s": median([job.line_count / (ends[job.pk] - starts[job.pk]) for job in jobs]),
            "jobs_per_worker": {str(pid): sum(1 for item in expected.values() if _worker_pid(item) == pid)
                                for pid in server.worker_pids()},
            "server_cpu_s": cpu_s,
            "server_cores": sum(cores.values()),
            "server_cpu_us_per_line": cpu_s / stored * 1e6,
            "worker_cores": {str(pid): value for pid, value in cores.items()},
            # Every process on this shared machine (the database's, other people's) meanwhile.
            "machine_busy_cores": machine_cores,
        }  # fmt: skip
        if client is not None and out is not None:
            streams = out["streams"]

            def job_of(stream: dict[str, Any]) -> dict[str, Any]:
                return expected[stream["path"].split("/")[2]]

            result.update(
                viewers=len(streams),
                viewers_complete=sum(1 for stream in streams if _stream_complete(stream, job_of(stream))),
                min_lines_per_viewer=min(stream.get("lines", 0) for stream in streams),
                all_connected_before_first_line=connected,
                latency=out["latency"],
                latency_by_worker=_latency_by_worker(
                    streams, client.latencies(), resources, lambda stream: _worker_pid(job_of(stream))
                ),
                client_cpu_share=out["client_cpu_share"],
            )
        return result

    # --- Profiling (optional) ----------------------------------------------------------------------

    def _start_profile(self, server: Server, label: str) -> list[subprocess.Popen[bytes]] | None:
        if not self.args.profile:
            return None
        py_spy = self.args.py_spy or _which("py-spy") or str(WORK_DIR / "tools/bin/py-spy")
        directory = Path(self.args.profile)
        directory.mkdir(parents=True, exist_ok=True)
        vendor = "sqlite" if self.url.startswith("sqlite") else "postgresql"
        profiles = []
        for pid in server.worker_pids():
            config = re.sub(r"[^\w.-]+", "-", str(server.config)).strip("-")
            stem = directory / f"{vendor}-{label}-{config}-{pid}"
            for fmt, suffix in (("raw", "txt"),):
                profiles.append(
                    subprocess.Popen(
                        [
                            py_spy,
                            "record",
                            "--pid",
                            str(pid),
                            "--rate",
                            "200",
                            "--format",
                            fmt,
                            "--threads",
                            "--gil",
                            "--output",
                            f"{stem}.{suffix}",
                            "--nonblocking",
                        ],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )  # fmt: skip
                )
        time.sleep(0.5)
        return profiles

    def _stop_profile(self, profiles: list[subprocess.Popen[bytes]] | None) -> None:
        for process in profiles or []:
            process.send_signal(signal.SIGINT)
        for process in profiles or []:
            process.wait(timeout=60)


def _replay_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "lines_per_s": median([run["lines_per_s"] for run in runs]),
        "seconds": median([run["seconds"] for run in runs]),
        "ttfb_s": median([run["ttfb_s"] for run in runs]),
        "rss_growth_mb": max(run["rss_growth_mb"] for run in runs),
        "rss_growth_mb_runs": [run["rss_growth_mb"] for run in runs],
        "rss_before_mb": runs[0]["rss_before_mb"],
        "exact": all(run["exact"] for run in runs),
        "bytes": runs[0]["bytes"],
    }


def _median_stats(items: list[dict[str, Any]]) -> dict[str, Any]:
    """The medians of several runs' p50, p99 and max."""
    return {stat: median([item[stat] for item in items]) for stat in ("p50", "p99", "max")}


def _flood_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """A growth case over its runs: the medians of its figures, its viewers summed (each
    must have every line), and every run as it was."""
    done = [run for run in runs if "error" not in run]
    errors = [run["error"] for run in runs if "error" in run]
    result: dict[str, Any] = {"jobs": runs[0]["jobs"], "runs": len(runs), "errors": errors}
    if not done:
        return {**result, "error": errors[-1], "repeats": runs}
    for key in ("wall_s", "lines_per_s", "job_lines_per_s", "server_cores", "server_cpu_us_per_line",
                "machine_busy_cores"):  # fmt: skip
        result[key] = median([run[key] for run in done])
    result.update(
        lines_per_job=done[0]["lines_per_job"],
        all_succeeded=all(run["all_succeeded"] for run in done),
        launched_before_start=all(run["launched_before_start"] for run in done),
    )
    if "viewers" in done[0]:
        by_worker = {}
        for group in done[0]["latency_by_worker"]:
            items = [run["latency_by_worker"][group] for run in done if run["latency_by_worker"][group]["viewers"]]
            by_worker[group] = {"viewers": sum(item["viewers"] for item in items), **_median_stats(items)}
        result.update(
            viewers=sum(run["viewers"] for run in done),
            viewers_complete=sum(run["viewers_complete"] for run in done),
            min_lines_per_viewer=min(run["min_lines_per_viewer"] for run in done),
            all_connected_before_first_line=all(run["all_connected_before_first_line"] for run in done),
            latency={"print_to_arrival": _median_stats([run["latency"]["print_to_arrival"] for run in done])},
            latency_by_worker=by_worker,
        )
    result["repeats"] = runs
    return result


def _worker_pid(expected: dict[str, Any]) -> int | None:
    """The pid of the process that ran the job (its `worker` is host:pid:...)."""
    return int(expected["worker"].split(":")[1]) if expected["worker"].count(":") >= 2 else None


def _latency_by_worker(
    streams: list[dict[str, Any]],
    latencies: array,
    resources: ResourceSampler,
    job_worker: Callable[[dict[str, Any]], int | None],
) -> dict[str, Any]:
    """print -> arrival of the viewers served by their job's own worker (`job_worker` of
    the stream: lines from the flusher, in-process) and by the others (lines from their
    poller), told apart by the client's port."""
    groups: dict[str, list[float]] = {"job_worker": [], "other_workers": [], "unknown": []}
    viewers: dict[str, int] = dict.fromkeys(groups, 0)
    for stream in streams:
        pid = resources.worker_of_port.get(stream.get("local_port", 0))
        group = "unknown" if pid is None else "job_worker" if pid == job_worker(stream) else "other_workers"
        viewers[group] += 1
        start = stream.get("latency_offset", 0)
        groups[group].extend(latencies[start : start + stream.get("latency_count", 0)])
    return {group: {"viewers": viewers[group], **summary(values)} for group, values in groups.items()}


def _database_activity() -> dict[str, int]:
    """PostgreSQL's counters of the benchmark database; nothing on SQLite."""
    from django.db import connection

    if connection.vendor != "postgresql":
        return {}
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(
            "SELECT xact_commit + xact_rollback, sessions FROM pg_stat_database WHERE datname = current_database()"
        )
        transactions, sessions = cursor.fetchone()
    return {"transactions": transactions, "sessions": sessions}


def _which(name: str) -> str | None:
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        candidate = Path(directory) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def _stream_complete(stream: dict[str, Any], expected: dict[str, Any], *, text: bool = False) -> bool:
    if stream.get("status") != 200 or stream.get("error"):
        return False
    if text:
        return stream["lines"] == expected["lines"] and stream["digest"] == expected["text_digest"]
    return (
        stream["lines"] == expected["lines"]
        and stream["first_number"] == 1
        and stream["last_number"] == expected["lines"]
        and stream["contiguous"]
        and stream["digest"] == expected["sse_digest"]
        and stream["done_status"] == expected["status"]
    )


# --- The table ------------------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:,.1f} ms"


def _pair(stats: dict[str, Any]) -> str:
    return f"{_ms(stats.get('p50'))} / {_ms(stats.get('p99'))}"


def table_rows(db: dict[str, Any]) -> Iterator[tuple[str, str]]:
    if "error" in db:
        yield ("ERROR", db["error"])
    for number, section in enumerate(("latency", "fanout", "replay", "idle", "growth", "capacity"), 1):
        if "error" in db.get(section, {}):
            yield (f"{number}. {section}: ERROR", db[section]["error"][:100])
    latency = db.get("latency")
    if latency and "in_process" in latency:
        yield (f"1. latency, 1 viewer, 1 line / {latency['interval'] * 1000:g} ms, {latency['server']}", "")
        yield ("   lines of another process come by", "NOTIFY" if latency["other_process_by"] == "notify" else "poll")
        for case, label in (("in_process", "(a) job in the serving process"),
                            ("other_process", "(b) job in another process (runjob)"),
                            ("other_process_poll", "(c) the same, server polling (NOTIFY off)")):  # fmt: skip
            if case not in latency:
                continue
            yield (f"   {label}: print -> client p50 / p99", _pair(latency[case]["print_to_arrival"]))
            yield (f"      {label[:3]} of which print -> t (flush) p50 / p99", _pair(latency[case]["print_to_t"]))
            yield (f"      {label[:3]} of which t -> client p50 / p99", _pair(latency[case]["t_to_arrival"]))
        yield ("   baseline: same loop over a bare loopback socket", _pair(latency["loopback"]["print_to_arrival"]))
    fanout = db.get("fanout")
    if fanout and "runs" in fanout:
        yield (f"2. fan-out, {fanout['viewers']} viewers, {fanout['lines']:,} lines at 1 / "
               f"{fanout['interval'] * 1000:g} ms", "")  # fmt: skip
        for run in fanout["runs"]:
            tag = f"   [{run['config']}]"
            if "error" in run or "latency" not in run:
                yield (f"{tag} ERROR", run.get("error", "did not finish")[:100])
                continue
            yield (f"{tag} viewers with every line, exact",
                   f"{run['viewers_complete']} / {fanout['viewers']} ({run['lines_delivered']:,} lines; "
                   f"min {run['min_lines_per_viewer']:,} of {run['lines_expected']:,})")  # fmt: skip
            latency = run["latency"]
            yield (f"{tag} print -> client p50 / p99 (worst viewer p99)",
                   f"{_pair(latency['print_to_arrival'])} ({_ms(run['worst_viewer_p99'])})")  # fmt: skip
            yield from _by_worker_rows(tag, run["latency_by_worker"])
            yield (f"{tag} time to first byte p50 / max; viewers waiting > 1 s",
                   f"{_ms(run['ttfb']['p50'])} / {_ms(run['ttfb']['max'])}; "
                   f"{run['viewers_waiting_over_1s']}")  # fmt: skip
            connections = "+".join(str(count) for count in sorted(run["connections_per_worker"].values()))
            rate = run["job_lines_per_s"]
            yield (f"{tag} job's own rate; client connections per worker (peak)",
                   f"{rate or 0:,.0f} lines/s; {connections}")  # fmt: skip
            job_pid = str(run["job_ran_in_worker"])
            per_worker = " + ".join(
                f"{cores:.2f}{'*' if pid == job_pid else ''}" for pid, cores in run["worker_cores"].items()
            )
            yield (f"{tag} server CPU (cores, avg: master + workers, * = job's)", per_worker)
            yield (f"{tag} server CPU total (cores, avg); RSS before -> peak",
                   f"{run['server_cores']:.2f}; {run['rss_before_mb']:.0f} -> {run['rss_peak_mb']:.0f} MB")  # fmt: skip
            if "no_viewer" in run:
                alone = run["no_viewer"]["server_cores"]
                yield (f"{tag} baseline: same job, no viewer: server CPU (cores)", f"{alone:.2f}")
            admin = run["admin_under_load"]
            yield (f"{tag} admin changelist p50 / p99 (max; n)",
                   f"{_pair(admin)} ({_ms(admin['max'])}; {admin['n']})")  # fmt: skip
            yield (f"{tag} baseline: admin changelist idle p50 / p99", _pair(run["admin_idle"]))
            if run.get("database_per_s"):
                activity = run["database_per_s"]
                yield (f"{tag} PostgreSQL transactions/s; sessions opened/s",
                       f"{activity['transactions']:,.0f}; {activity['sessions']:,.0f}")  # fmt: skip
            yield (f"{tag} CPU (cores) of the client; bench process; other processes",
                   f"{run['client_cpu_share']:.2f}; {run['bench_process_cores']:.2f}; "
                   f"{run['other_processes_cores']:.2f}")  # fmt: skip
    replay = db.get("replay")
    if replay and "lines" in replay:
        yield (f"3. replay of a finished {replay['lines']:,}-line run, {replay['server']}", "")
        labels = {
            "rows_after_chunks": "in-process: chunked rows_after reads only",
            "rows_after_plain_text": "in-process: reads + plain-text format",
            "rows_after_sse": "in-process: reads + SSE format",
            "list_lines_all": "baseline: list(job.lines.all())",
        }
        for phase, title in (("analyzed", "after ANALYZE"), ("fresh", "fresh run, no ANALYZE yet (1 run)")):
            if phase not in replay:
                continue
            yield (f"   {title}", "")
            for kind in ("log.txt", "events"):
                item = replay[phase][kind]
                yield (f"   {phase[:5]} {kind}: lines/s; worker peak RSS growth",
                       f"{item['lines_per_s']:,.0f}; {item['rss_growth_mb']:.1f} MB"
                       f"{'' if item['exact'] else ' (NOT EXACT)'}")  # fmt: skip
            for name, label in labels.items():
                if name in replay[phase]:
                    item = replay[phase][name]
                    yield (
                        f"   {phase[:5]} {label}",
                        f"{item['lines_per_s']:,.0f} lines/s; {item['rss_growth_mb']:.1f} MB",
                    )
    yield from _idle_rows(db.get("idle"))
    yield from _growth_rows(db.get("growth"))
    yield from _capacity_rows(db.get("capacity"))


def _capacity_rows(capacity: dict[str, Any] | None) -> Iterator[tuple[str, str]]:
    if not capacity or "runs" not in capacity:
        return
    yield (f"6. capacity: a burst of {capacity['burst_viewers']:,} streams, a crowd of "
           f"{capacity['crowd_viewers']:,} idle streams; pages loaded meanwhile", "")  # fmt: skip
    for run in capacity["runs"]:
        tag = f"   [{run['config']}]"
        if "error" in run:
            yield (f"{tag} ERROR", run["error"][:100])
        for case in ("burst", "crowd"):
            item = run.get(case)
            if not item:
                continue
            yield (f"{tag} {case}: served; refused (503); unanswered",
                   f"{item['served']:,}; {item['refused_503']:,}; {item['unanswered']:,}")  # fmt: skip
            yield (f"{tag} {case}: first bytes p50 / p99", _pair(item["first_bytes"]))
            pages = item["pages"]
            yield (f"{tag} {case}: pages p50 / p99 (max; failed or timed out / n)",
                   f"{_pair(pages)} ({_ms(pages['max'])}; {pages['failures']} / {pages['n']})")  # fmt: skip
            if case == "crowd" and item["kb_per_served_stream"] is not None:
                yield (f"{tag} crowd: server memory per stream", f"{item['kb_per_served_stream']:.0f} KB")


def _runs(repeat: int) -> str:
    return f"medians of {repeat} runs" if repeat > 1 else "1 run"


def _by_worker_rows(tag: str, by_worker: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for group, label in (("job_worker", "job's worker"), ("other_workers", "other workers (poller)")):
        item = by_worker[group]
        if item["viewers"]:
            yield (f"{tag}   viewers in the {label}: n; p50 / p99", f"{item['viewers']}; {_pair(item)}")


def _cpu_pct(window: dict[str, Any], job_pid: int | None = None) -> str:
    """Total % of one core, then master + workers (* = the job's)."""
    parts = " + ".join(
        f"{pct:.1f}{'*' if pid == str(job_pid) else ''}" for pid, pct in window["cpu_pct_per_process"].items()
    )
    return f"{window['cpu_pct']:.1f}% ({parts}; {window['window_s']:.1f} s)"


def _idle_rows(idle: dict[str, Any] | None) -> Iterator[tuple[str, str]]:
    if not idle or "server" not in idle:
        return
    viewers = idle["viewers"]
    yield (f"4. idle: {viewers} viewers of running jobs printing nothing, {idle['server']}", "")
    if "floor" in idle:
        yield ("   server CPU, % of one core (master + workers): job running, no viewer", _cpu_pct(idle["floor"]))
    for case, label in (("in_process", "(a) job in the serving process"),
                        ("other_process", f"(b) {idle['runs']} jobs in runjob processes"),
                        ("other_process_poll", "(c) the same, server polling (NOTIFY off)")):  # fmt: skip
        item = idle.get(case)
        if not item:
            continue
        tag = label[:3]
        # The runs of (a) are the server's own: its floor is the section's.
        floor = item.get("floor", idle.get("floor"))
        if "floor" in item:
            yield (f"   {label}: server CPU, no viewer", _cpu_pct(floor))
        yield (f"   {tag} server CPU with {viewers} viewers", _cpu_pct(item, item["job_ran_in_worker"]))
        if item["server_queries_per_s"] is not None:
            # (b) and (c) have a quiet supervisor: their queries are their viewers' and poller's.
            yield (f"      {tag} the server's database queries/s: no viewer; {viewers} viewers",
                   f"{floor['server_queries_per_s']:.2f}; {item['server_queries_per_s']:.2f}")  # fmt: skip
        silent = "" if item["silent_during_window"] else " (a job PRINTED during the window)"
        yield (f"      {tag} viewers with every line and done; connected in",
               f"{item['viewers_complete']} / {viewers}; {item['connect_s']:.1f} s{silent}")  # fmt: skip
        beats = item["heartbeats_per_viewer"]
        yield (f"      {tag} heartbeats per viewer min-max; bytes per viewer; connected",
               f"{beats['min']}-{beats['max']}; {item['bytes_per_viewer']:,.0f}; "
               f"{item['connected_s']:.0f} s")  # fmt: skip
    seed = idle.get("seed_baseline")
    if seed:
        yield (f"   baseline: seed's get_nowait loop, {viewers} viewers: server CPU", _cpu_pct(seed))
        yield ("      viewers with first bytes by the window's start; its end; with done at last",
               f"{seed['first_bytes_by_window_start']}; {seed['first_bytes_by_window_end']}; "
               f"{seed['viewers_complete']} / {viewers}")  # fmt: skip
        yield ("      time to first byte p50 / max", f"{_ms(seed['ttfb']['p50'])} / {_ms(seed['ttfb']['max'])}")


def _growth_rows(growth: dict[str, Any] | None) -> Iterator[tuple[str, str]]:
    if not growth or "server" not in growth:
        return
    yield (f"5. growth: jobs flooding at once, {growth['total_lines']:,} lines in all, 1 viewer per job, "
           f"{growth['server']}, RUNLOG_WORKERS={growth['runlog_workers']}; {_runs(growth['repeat'])}",
           "")  # fmt: skip
    for run in growth["runs"]:
        tag = f"   [{run['jobs']} job{'s' if run['jobs'] > 1 else ''}]"
        if "error" in run or "lines_per_s" not in run:
            yield (f"{tag} ERROR", run.get("error", "did not finish")[:100])
            continue
        if run["errors"]:
            yield (f"{tag} FAILED runs: {len(run['errors'])} of {run['runs']}", run["errors"][0][:100])
        ratio = f" (x{run['vs_1_job']:.2f} vs 1 job)" if run.get("vs_1_job") is not None else ""
        yield (f"{tag} lines/s, all jobs (first start -> last end); per job p50",
               f"{run['lines_per_s']:,.0f}{ratio}; {run['job_lines_per_s']:,.0f}")  # fmt: skip
        failed = "" if run["all_succeeded"] else " (NOT ALL SUCCEEDED)"
        if not (run["launched_before_start"] and run["all_connected_before_first_line"]):
            failed += " (launched or connected after the start)"
        yield (f"{tag} viewers with every line, exact (all runs)",
               f"{run['viewers_complete']} / {run['viewers']} (min {run['min_lines_per_viewer']:,} lines of "
               f"{run['lines_per_job'] + 1:,}){failed}")  # fmt: skip
        yield (f"{tag} print -> client p50 / p99", _pair(run["latency"]["print_to_arrival"]))
        yield from _by_worker_rows(tag, run["latency_by_worker"])
        yield (f"{tag} server CPU (cores, avg); us per line; machine busy (cores)",
               f"{run['server_cores']:.2f}; {run['server_cpu_us_per_line']:.1f}; "
               f"{run['machine_busy_cores']:.2f}")  # fmt: skip
    alone = growth.get("no_viewer")
    if alone and "lines_per_s" in alone:
        ratio = growth.get("one_viewer_vs_none")
        yield ("   baseline: 1 job, no viewer: lines/s (1 job with a viewer / without); server us per line",
               f"{alone['lines_per_s']:,.0f} ({'-' if ratio is None else f'x{ratio:.2f}'}); "
               f"{alone['server_cpu_us_per_line']:.1f}")  # fmt: skip


def print_table(results: dict[str, Any]) -> None:
    databases = results["databases"]
    names = list(databases)
    columns = {name: dict(table_rows(databases[name])) for name in names}
    labels: list[str] = []
    for name in names:  # every database's rows, each after the row it follows there
        previous = None
        for label, _ in table_rows(databases[name]):
            if label not in labels:
                labels.insert(labels.index(previous) + 1 if previous is not None else len(labels), label)
            previous = label
    width = max(len(label) for label in labels)
    value_width = max([len(value) for column in columns.values() for value in column.values()] + [10])
    code = results["code"]
    dirty = f", {len(code['uncommitted'])} uncommitted files" if code["uncommitted"] else ""
    changed = " (CHANGED during the run: figures may mix versions)" if code.get("changed_during_run") else ""
    print(f"Streaming benchmark ({', '.join(names)}); code {code['commit']}{dirty}, digest {code['digest']}{changed}",
          file=sys.stderr)  # fmt: skip
    print(f"  {'':<{width}}  " + "  ".join(f"{name:<{value_width}}" for name in names), file=sys.stderr)
    for label in labels:
        values = [columns[name].get(label, "") for name in names]
        print(f"  {label:<{width}}  " + "  ".join(f"{value:<{value_width}}" for value in values), file=sys.stderr)


if __name__ == "__main__":
    main()
