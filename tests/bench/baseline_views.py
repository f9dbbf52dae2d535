"""The idle section's baseline (bench_streaming.py), served by the benchmark's servers only:
the streaming view of the Django article Runlog grew from (a thread's output through a
queue.Queue, read by a StreamingHttpResponse generator that spins on get_nowait()).

GET /bench/seed-stream?until=<time.time()> starts a thread that puts one item, sleeps until
`until` (prints nothing meanwhile, like bench.silent), puts "Done" and ends; the response
yields an event per item (in Runlog's line format, so that one client reads both) while
the thread is alive, then `event: done`. Every
request's thread ends at the same shared moment, at most MAX_SECONDS from now, so that the
spinning stops when the benchmark's window ends and the server stops cleanly.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Iterator

from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, StreamingHttpResponse

MAX_SECONDS = 120.0


def seed_stream(request: HttpRequest) -> HttpResponse:
    try:
        until = min(float(request.GET["until"]), time.time() + MAX_SECONDS)
    except (KeyError, ValueError):
        return HttpResponseBadRequest("until=<time.time()> is required")
    items: queue.Queue[str] = queue.Queue()

    def silent() -> None:
        items.put("started; silent from now on")
        threading.Event().wait(max(0.0, until - time.time()))
        items.put("Done")

    thread = threading.Thread(target=silent, name="seed-silent", daemon=True)
    response = StreamingHttpResponse(_seed_loop(thread, items), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    return response


def _seed_loop(thread: threading.Thread, items: queue.Queue[str]) -> Iterator[str]:
    """The seed's Steamer.start(), with events instead of `<br>`."""
    thread.start()
    sent = 0

    def event(item: str) -> str:
        nonlocal sent
        sent += 1
        return f"id: {sent}\ndata: {json.dumps({'n': sent, 'stream': 'stdout', 'text': item})}\n\n"

    while thread.is_alive():
        try:
            yield event(items.get_nowait())
        except queue.Empty:
            pass
    # The seed drops what the thread put just before it ended; drained here so that every
    # viewer gets the same items (it costs nothing: the spinning is what is measured).
    while not items.empty():
        yield event(items.get_nowait())
    yield 'event: done\ndata: {"status": "succeeded", "line_count": 2}\n\n'
