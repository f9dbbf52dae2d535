"""The streaming benchmark's jobs (discovered when tests/bench/stream_settings.py is the
settings module; never part of the product).

bench.clock is demo.count (print, progress, sleep per line, then "Done") whose lines start
with the time.time() of their own print(), so that a client measures the latency from the
print() itself rather than from the flusher's timestamp `t`. bench.flood_clock prints such
lines as fast as it can (the growth section); bench.silent runs and prints nothing for a
while (the idle section).
"""

from __future__ import annotations

import time

from jobs import job, progress, sleep


@job("bench.clock", title="Clock (benchmark)", description="demo.count with each line's print time in its text.")
def clock(n: int = 100, interval: float = 0.01, delay: float = 0.0) -> None:
    if delay:
        sleep(delay)  # time for the viewers to connect before the first line
    for index in range(n):
        print(f"{time.time():.6f} Task #{index}")
        progress(index + 1, n)
        sleep(interval)
    print("Done")


@job("bench.flood_clock", title="Flood clock (benchmark)", description="bench.clock with no pause between lines.")
def flood_clock(n: int = 1000, start_at: float = 0.0) -> None:
    # An absolute start (a time.time()), not a delay: jobs launched one after the other then
    # flood at the same moment, after their viewers have connected.
    wait = start_at - time.time()
    if wait > 0:
        sleep(wait)
    for index in range(n):
        print(f"{time.time():.6f} Task #{index}")
    print("Done")


@job("bench.silent", title="Silent (benchmark)", description="One line, nothing for a while, then Done.")
def silent(seconds: float = 30.0) -> None:
    print("started; silent from now on")
    sleep(seconds)
    print("Done")
