"""Demo jobs, so that a new install has something real to launch (RUNLOG_DEMO_JOBS)."""

from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path
from typing import Annotated, Literal

from django.core.validators import MaxValueValidator, MinValueValidator

from jobs import job, progress, run_command, section, sleep

logger = logging.getLogger("demo")

#: How many of something: never negative (a form error, not a silent no-op).
Count = Annotated[int, MinValueValidator(0)]
Seconds = Annotated[float, MinValueValidator(0)]

# demo.command's child: a plain script, so that the logged command line is short.
_CHILD = Path(__file__).with_name("demo_child.py")


@job("demo.count", title="Count", description="Prints Task #0 .. Task #n-1, one every `interval` seconds, then Done.")
def count(n: Count = 10, interval: Seconds = 1.0) -> None:
    for index in range(n):
        print(f"Task #{index}")
        progress(index + 1, n)
        sleep(interval)
    print("Done")


@job("demo.flood", title="Flood", description="Prints `lines` lines of `width` characters as fast as it can.")
def flood(lines: Count = 100_000, width: Count = 80) -> None:
    filler = "x" * max(0, width - 13)  # 12 digits, a space, the filler: `width` characters
    for index in range(lines):
        print(f"{index:>12} {filler}")


@job("demo.fail", title="Fail", description="Prints a few lines, then raises an exception.")
def fail() -> None:
    print("Preparing")
    print("Loading data")
    print("About to fail", file=sys.stderr)
    raise RuntimeError("demo.fail failed on purpose")


@job("demo.echo", title="Echo", description="Prints the given text, `times` times.")
def echo(text: str, times: Count = 1) -> None:
    for _ in range(times):
        print(text)


@job(
    "demo.command",
    title="Run a command",
    description="Runs a Python child process that prints a line per second to stdout, and some lines to stderr.",
)
def command(seconds: Annotated[int, MinValueValidator(0)] = 5) -> None:
    run_command([sys.executable, _CHILD, str(seconds)], check=True)


@job("demo.logging", title="Logging", description="Logs at INFO and WARNING through the logging module.")
def logging_demo() -> None:
    logger.info("Starting the logging demo")
    logger.warning("This is a warning")
    logger.info("Finished the logging demo")


@job("demo.threads", title="Threads", description="Starts `workers` threads that each print a few lines.")
def threads(workers: Annotated[int, MinValueValidator(0), MaxValueValidator(64)] = 4, lines: Count = 3) -> None:
    def work(index: int) -> None:
        for line in range(lines):
            print(f"worker {index}: line {line + 1} of {lines}")

    started = [threading.Thread(target=work, args=(index,)) for index in range(workers)]
    for thread in started:
        thread.start()
    for thread in started:
        thread.join()
    print(f"All {workers} workers finished")


@job("demo.progress", title="Progress", description="Reports progress while it works through `steps` steps.")
def progress_demo(steps: Count = 20, delay: Seconds = 0.5, mode: Literal["fast", "careful"] = "fast") -> None:
    for step in range(1, steps + 1):
        progress(step, steps, f"step {step} of {steps} ({mode})")
        sleep(delay)
    print(f"Worked through {steps} steps")


@job(
    "demo.build",
    title="Build",
    description="A CI-like build: `jobs.section` groups, ANSI colours, a warning and a summary.",
)
def build(packages: Count = 4, tests: Count = 6, delay: Seconds = 0.2) -> None:
    with section("Install dependencies"):
        for index in range(packages):
            print(f"\x1b[32m✔\x1b[0m package-{index} \x1b[2m(cached)\x1b[0m")
            sleep(delay)
    with section("Run tests"):
        for index in range(tests):
            with section(f"test_case_{index}"):
                print(f"\x1b[1mtest_case_{index}\x1b[0m ... \x1b[32mPASSED\x1b[0m")
                sleep(delay)
        logger.warning("1 test took longer than expected")
    print(f"\x1b[1;32mBuild succeeded:\x1b[0m {tests} passed, {packages} packages")
