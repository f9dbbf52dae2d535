"""The job page against a flood, in a real Chromium, through a real gunicorn.

    python -m tests.bench.bench_page [--database sqlite|postgresql] [--lines 200000] [--repeat 3]
        [--baseline-commit 2771a14] [--no-baseline] [--quick] [--json out.json] [--trace DIR]

The servers serve a copy of the checkout taken at the start (and of the baseline commit).
A `demo.flood` of LINES lines (80 characters) runs in this process; its lines reach the
server's viewers through the server's poller, as a run of another process does. Each viewer
opens before its run starts, so that every line reaches it live. Per viewer:

- catch-up: from the run's end (its finished_at) to the first animation frame that shows
  the final status, and to the first that shows the last line (final state: both);
- intake: lines per second reaching the page's script, from the first line event to the
  last (the events' ids count the lines);
- the longest frame while the page follows: the longest interval between two animation
  frames from the first line event to the final state, and the frames over 200 ms; in the
  JSON, the slowest long animation frame split into script, rendering and the rest (the
  browser's own tasks, such as parsing the stream, and waiting for a CPU).

Viewers, each with a flood of its own, in turns so that the machine's noise spreads over all:
- the page (events with batches of lines),
- the page with one line per event (?batch=0),
- today's page: the server and page of --baseline-commit, served by their own gunicorn from a
  `git archive` of that commit (one line per event),
- a raw SSE reader in a child process, as `curl -N` reads (with batches, and one line per
  event): its catch-up is to the `done` event, its intake from its first line to its last.

Figures are medians of --repeat runs. The machine is shared and noisy: judge the ratios.

--trace DIR records a Chromium trace of each page viewer's run there and prints what its long
tasks were made of (tests/bench/trace_summary.py); tracing slows the page, so its figures are
not the others'.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.bench.bench_streaming import (
    RUN_DIR,
    MachineCpu,
    Server,
    ServerConfig,
    code_version,
    database_url,
    drop_database,
    log,
    reset_database,
    take_snapshot,
)
from tests.bench.trace_summary import summarise as summarise_trace

PROJECT_DIR = Path(__file__).resolve().parents[2]
SETTINGS = "tests.bench.page_settings"
CHROMIUM = "/usr/bin/chromium"
WIDTH = 80
TRACE_CATEGORIES = ["toplevel", "devtools.timeline", "disabled-by-default-devtools.timeline", "v8", "blink", "loading"]
SLOW_FRAME_MS = 200
#: Seconds a viewer may take to show a run's end (today's page takes tens of seconds).
PATIENCE = 300

# Times the page's line events (wrapping the listeners it adds) and its animation frames;
# one rAF loop notes the first frame that shows the final status and the last line.
INSTRUMENT = """
(() => {
  const bench = window.__bench = {firstLine: 0, lastLine: 0, lines: 0, done: 0, statusShown: 0,
    lastShown: 0, longestFrame: 0, slowFrames: 0, frames: 0, slowest: null};
  // The slowest long animation frame: how much of it was script, rendering, or neither
  // (other tasks such as the browser's parsing of the stream, or waiting for a CPU).
  new PerformanceObserver((entries) => {
    for (const frame of entries.getEntries()) {
      if (!bench.firstLine || (bench.statusShown && bench.lastShown)) continue;
      if (bench.slowest && frame.duration <= bench.slowest.duration) continue;
      const script = frame.scripts.reduce((sum, each) => sum + each.duration, 0);
      // Style, layout and paint (the animation frame callbacks count as script).
      const rendering = frame.styleAndLayoutStart ? frame.startTime + frame.duration - frame.styleAndLayoutStart : 0;
      bench.slowest = {duration: frame.duration, script, rendering, other: frame.duration - script - rendering};
    }
  }).observe({type: "long-animation-frame"});
  const listen = EventSource.prototype.addEventListener;
  EventSource.prototype.addEventListener = function (type, listener, options) {
    if (type !== "lines" && type !== "message" && type !== "done") return listen.call(this, type, listener, options);
    return listen.call(this, type, (event) => {
      const now = Date.now();
      if (type === "done") bench.done = now;
      else {
        bench.firstLine ||= now;
        bench.lastLine = now;
        bench.lines = Number(event.lastEventId);
      }
      return listener.call(this, event);
    }, options);
  };
  let previous = 0;
  const frame = (time) => {
    if (previous && bench.firstLine && !(bench.statusShown && bench.lastShown)) {
      const interval = time - previous;
      bench.frames++;
      bench.longestFrame = Math.max(bench.longestFrame, interval);
      if (interval > SLOW_FRAME_MS) bench.slowFrames++;
    }
    previous = time;
    if (!bench.statusShown && document.getElementById("status-badge")?.textContent.trim() === "Succeeded") {
      bench.statusShown = Date.now();
    }
    if (!bench.lastShown && document.getElementById("LAST_ID")) bench.lastShown = Date.now();
    requestAnimationFrame(frame);
  };
  requestAnimationFrame(frame);
})();
"""


@dataclass(frozen=True)
class Viewer:
    key: str  # its name for --viewers
    name: str
    server: str  # "current" or "baseline"
    page: bool  # a page in Chromium, else the raw reader
    query: str = ""


VIEWERS = (
    Viewer("page", "page (batches of lines)", "current", True),
    Viewer("page-single", "page, one line per event", "current", True, "?batch=0"),
    Viewer("baseline", "today's page (baseline)", "baseline", True),
    Viewer("reader", "raw SSE reader, batches (baseline)", "current", False, "&batch=1"),
    Viewer("reader-single", "raw SSE reader, one line per event (baseline)", "current", False),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", default="sqlite", choices=["sqlite", "postgresql"])
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--baseline-commit", default="2771a14", help="the commit whose page is today's page")
    parser.add_argument("--no-baseline", action="store_true", help="skip today's page (its own server)")
    parser.add_argument(
        "--viewers",
        default=",".join(viewer.key for viewer in VIEWERS),
        help="the viewers measured, comma-separated (default: %(default)s)",
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run: 5,000 lines, once, no baseline server")
    parser.add_argument("--json", help="write the figures here as JSON")
    parser.add_argument("--trace", help="record a Chromium trace of each page's run in this directory")
    parser.add_argument("--read", nargs=3, metavar=("PORT", "PATH", "COOKIE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.read:
        print(json.dumps(read_stream(int(args.read[0]), args.read[1], args.read[2])))
        return
    if args.quick:
        args.lines, args.repeat, args.no_baseline = 5000, 1, True

    RUN_DIR.mkdir(parents=True, exist_ok=True)
    url = database_url(args.database, RUN_DIR)
    reset_database(url)
    os.environ.update(DATABASE_URL=url, DJANGO_SETTINGS_MODULE=SETTINGS)
    # Playwright's sync API runs an event loop in this thread; the Django calls here are plain sync code.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from jobs.running.runner import get_runner

    call_command("migrate", verbosity=0, interactive=False)
    results: dict[str, Any] = {"database": connection.vendor, "lines": args.lines, "code": code_version(PROJECT_DIR)}
    try:
        results.update(PageBench(args, url).run())
    finally:
        get_runner().stop()
        connection.close()
        drop_database(url)
    print_table(results)
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=2)


class PageBench:
    def __init__(self, args: argparse.Namespace, url: str) -> None:
        from django.conf import settings
        from django.contrib.auth import get_user_model
        from django.test import Client

        self.args, self.url, self.secret_key = args, url, settings.SECRET_KEY
        user = get_user_model().objects.create_superuser("bench", "bench@example.com", "bench-password")
        client = Client()
        client.force_login(user)
        self.session = client.cookies["sessionid"].value
        keys = set(args.viewers.split(","))
        if unknown := keys - {viewer.key for viewer in VIEWERS}:
            raise SystemExit(f"unknown viewers: {', '.join(sorted(unknown))}")
        self.viewers = [
            viewer
            for viewer in VIEWERS
            if viewer.key in keys and not (args.no_baseline and viewer.server == "baseline")
        ]

    def run(self) -> dict[str, Any]:
        from playwright.sync_api import sync_playwright

        config = ServerConfig.parse("default")
        env = {"DJANGO_SETTINGS_MODULE": SETTINGS}
        # A copy of the checkout's code: edits made while the benchmark runs do not mix in.
        current = take_snapshot()
        servers = {"current": Server(config, self.url, self.secret_key, "page-current", env, tree=current)}
        try:
            if any(viewer.server == "baseline" for viewer in self.viewers):
                tree = baseline_tree(self.args.baseline_commit)
                # That commit's gunicorn config file names no application.
                servers["baseline"] = Server(
                    config, self.url, self.secret_key, "page-baseline", env, tree=tree, app="config.wsgi:application"
                )
            runs: dict[str, list[dict[str, Any]]] = {viewer.name: [] for viewer in self.viewers}
            machine = MachineCpu()
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
                )
                for round_number in range(self.args.repeat):
                    for viewer in self.viewers:
                        port = servers[viewer.server].port
                        if viewer.page:
                            run = self.measure_page(browser, viewer, port, round_number)
                        else:
                            run = self.measure_reader(viewer, port)
                        log(f"round {round_number + 1}, {viewer.name}: {run}")
                        runs[viewer.name].append(run)
                browser.close()
            return {
                "viewers": {name: {"median": medians(figures), "runs": figures} for name, figures in runs.items()},
                "machine_busy_cores": machine.busy_cores(),
            }
        finally:
            for server in servers.values():
                server.stop()
            shutil.rmtree(current, ignore_errors=True)

    def flood(self) -> Any:
        from jobs.launcher import create_run

        return create_run("demo.flood", {"lines": self.args.lines, "width": WIDTH})

    def start(self, job: Any) -> Any:
        """Start the run in this process; its row once it has ended."""
        from jobs.tasks import run_job

        run_job.enqueue(str(job.id))
        deadline = time.monotonic() + PATIENCE
        while not job.is_finished:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{job.id} did not end")
            time.sleep(0.05)
            job.refresh_from_db()
        return job

    def measure_page(self, browser: Any, viewer: Viewer, port: int, round_number: int) -> dict[str, Any]:
        job = self.flood()
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.add_cookies([{"name": "sessionid", "value": self.session, "url": f"http://127.0.0.1:{port}"}])
        page = context.new_page()
        page.set_default_timeout(PATIENCE * 1000)
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        instrument = INSTRUMENT.replace("SLOW_FRAME_MS", str(SLOW_FRAME_MS))
        page.add_init_script(instrument.replace("LAST_ID", f"L{self.args.lines}"))
        trace = None
        if self.args.trace:
            slug = "".join(c if c.isalnum() else "-" for c in viewer.name).strip("-")
            trace = Path(self.args.trace) / f"{slug}-{round_number + 1}.json"
            trace.parent.mkdir(parents=True, exist_ok=True)
            browser.start_tracing(page=page, path=str(trace), categories=TRACE_CATEGORIES)
        try:
            page.goto(f"http://127.0.0.1:{port}/jobs/{job.id}/{viewer.query}")
            page.wait_for_function("document.getElementById('live')?.textContent === 'Live'", polling=100)
            job = self.start(job)
            page.wait_for_function("window.__bench.statusShown && window.__bench.lastShown", polling=100)
            seen = page.evaluate("window.__bench")
            if trace:
                browser.stop_tracing()
                log(summarise_trace(str(trace)))
        except Exception as exc:
            raise RuntimeError(f"{viewer.name}: {exc}; errors on the page: {errors}") from exc
        finally:
            context.close()
        ended = job.finished_at.timestamp() * 1000
        return {
            "final_state_ms": max(seen["statusShown"], seen["lastShown"]) - ended,
            "status_ms": seen["statusShown"] - ended,
            "last_line_ms": seen["lastShown"] - ended,
            "lines_per_s": rate(seen["lines"], seen["firstLine"], seen["lastLine"]),
            "longest_frame_ms": seen["longestFrame"],
            "slow_frames": seen["slowFrames"],
            "frames": seen["frames"],
            "slowest_frame": seen["slowest"],
            "flood_lines_per_s": rate(job.line_count, job.started_at.timestamp() * 1000, ended),
        }

    def measure_reader(self, viewer: Viewer, port: int) -> dict[str, Any]:
        job = self.flood()
        command = [sys.executable, "-m", "tests.bench.bench_page", "--read", str(port),
                   f"/jobs/{job.id}/events?offset=0{viewer.query}", f"sessionid={self.session}"]  # fmt: skip
        reader = subprocess.Popen(command, cwd=PROJECT_DIR, stdout=subprocess.PIPE, text=True)
        assert reader.stdout is not None
        if reader.stdout.readline().strip() != "ready":
            raise RuntimeError("the reader did not connect")
        job = self.start(job)
        seen = json.loads(reader.stdout.read())
        reader.wait()
        ended = job.finished_at.timestamp() * 1000
        return {
            "final_state_ms": seen["done"] - ended,
            "lines_per_s": rate(seen["lines"], seen["first_line"], seen["last_line"]),
            "flood_lines_per_s": rate(job.line_count, job.started_at.timestamp() * 1000, ended),
        }


def baseline_tree(commit: str) -> Path:
    """The code of `commit`, with this benchmark's settings module, to serve today's page."""
    tree = RUN_DIR / f"baseline-{commit}"
    shutil.rmtree(tree, ignore_errors=True)
    tree.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", commit], cwd=PROJECT_DIR, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    shutil.copy2(Path(__file__).with_name("page_settings.py"), tree / "tests/bench/page_settings.py")
    return tree


def read_stream(port: int, path: str, cookie: str) -> dict[str, Any]:
    """The raw reader (a child process, with no Django): reads the event stream as it comes,
    noting when each chunk arrived, and finds the first line, the last and `done` afterwards.
    HTTP/1.0, so that the body comes unchunked and ends when the server closes it."""
    arrivals: list[tuple[int, float]] = []  # (end offset in the body, time)
    body = bytearray()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nCookie: {cookie}\r\n\r\n".encode())
        first = True
        while data := sock.recv(1 << 20):
            body += data
            arrivals.append((len(body), time.time() * 1000))
            if first:
                print("ready", flush=True)
                first = False

    def arrival(offset: int) -> float:
        return next(at for end, at in arrivals if end > offset)

    first_line = body.find(b"\nid: ")
    last_line = body.rfind(b"\nid: ")
    last_id = int(body[last_line + 5 : body.index(b"\n", last_line + 5)])
    return {
        "first_line": arrival(first_line),
        "last_line": arrival(last_line),
        "lines": last_id,
        "done": arrival(body.find(b"event: done")),
    }


def rate(lines: int, first_ms: float, last_ms: float) -> float | None:
    return lines / (last_ms - first_ms) * 1000 if last_ms > first_ms else None


def medians(runs: list[dict[str, Any]]) -> dict[str, float]:
    numbers = [key for key, value in runs[0].items() if isinstance(value, int | float)]
    return {key: statistics.median(run[key] for run in runs) for key in numbers}


def print_table(results: dict[str, Any]) -> None:
    print(f"\nJob page, {results['lines']:,}-line demo.flood, {results['database']} (medians)")
    print(f"machine busy: {results['machine_busy_cores']:.2f} cores\n")
    columns = ["viewer", "final state after the run's end", "final status", "last line", "intake"]
    columns += ["longest frame", f"frames > {SLOW_FRAME_MS} ms"]
    print(f"| {' | '.join(columns)} |\n|{'---|' * len(columns)}")
    for name, figures in results["viewers"].items():
        median = figures["median"]

        def ms(key: str, median: dict[str, float] = median) -> str:
            return f"{median[key]:,.0f} ms" if key in median else ""

        intake = f"{median['lines_per_s']:,.0f} lines/s" if "lines_per_s" in median else ""
        slow = f"{median['slow_frames']:.0f}" if "slow_frames" in median else ""
        print(
            f"| {name} | {ms('final_state_ms')} | {ms('status_ms')} | {ms('last_line_ms')} | {intake} "
            f"| {ms('longest_frame_ms')} | {slow} |"
        )
    floods = [run["flood_lines_per_s"] for figures in results["viewers"].values() for run in figures["runs"]]
    print(f"\nthe flood itself: {statistics.median(floods):,.0f} lines/s (median of every run)")


if __name__ == "__main__":
    main()
