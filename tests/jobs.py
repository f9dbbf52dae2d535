"""Jobs that tests run in other processes. The tests' settings install this package as an
app, so that servers and worker processes (db_worker, Celery) discover these jobs like any
app's, as the test process does."""

from __future__ import annotations

import os
import time

from jobs import job, sleep


@job("workers.tagged")
def tagged(tag: str, lines: int = 20, interval: float = 0.0) -> None:
    """Lines that name their run, to tell runs apart in a shared worker."""
    for index in range(1, lines + 1):
        print(f"{tag} line {index}")
        if interval:
            sleep(interval)


@job("workers.ticking")
def ticking(seconds: float = 2.0, interval: float = 0.05) -> None:
    """Prints a numbered tick every `interval` seconds for `seconds`, then "done"."""
    for index in range(round(seconds / interval)):
        print(f"tick {index}")
        sleep(interval)
    print("done")


@job("workers.unstoppable")
def unstoppable(seconds: float = 60.0) -> None:
    """Blocks where no cancel reaches it (as a job stuck in a C call would)."""
    print("blocking")
    time.sleep(seconds)
    print("unblocked")


@job("workers.slow", timeout=1.0)
def slow() -> None:
    print("starting")
    sleep(60)


@job("tests.count_until")
def count_until(stop_file: str, interval: float = 0.001) -> None:
    """Task #0, #1, ... every `interval` s until `stop_file` exists, then Done: a run that
    lasts as long as its test needs, in whichever process it runs."""
    index = 0
    while not os.path.exists(stop_file):
        print(f"Task #{index}")
        index += 1
        sleep(interval)
    print("Done")
