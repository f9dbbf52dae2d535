"""The streaming benchmark's job (discovered when tests/bench/stream_settings.py is the
settings module; never part of the product).

bench.clock is demo.count (print, progress, sleep per line, then "Done") whose lines start
with the time.time() of their own print(), so that a client measures the latency from the
print() itself rather than from the flusher's timestamp `t`.
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
