"""How many live streams (events, log.txt?follow=1) one process serves at once.

A stream can stay open for hours. Past RUNLOG_MAX_STREAMS a new one is refused with 503
and Retry-After (clients come back later, or to another process), so that streams never
take what pages need: under gthread a stream holds a thread until it ends.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator

from django.http import HttpResponse

from jobs.conf import runlog_settings

_lock = threading.Lock()
_open = 0


class Place:
    """One stream's place in the process's count; given back once, however the stream ends."""

    def __init__(self) -> None:
        self._held = True

    def release(self) -> None:
        global _open
        with _lock:
            if self._held:
                self._held = False
                _open -= 1


def take_place() -> Place | None:
    """A place for a new stream, or None when the process serves MAX_STREAMS already."""
    global _open
    with _lock:
        if _open >= runlog_settings.MAX_STREAMS:
            return None
        _open += 1
    return Place()


def open_streams() -> int:
    return _open


def refused() -> HttpResponse:
    """The answer to a stream the process has no room for: come back later."""
    response = HttpResponse(
        "This server is serving as many live streams as it can; retry shortly.\n",
        status=503,
        content_type="text/plain; charset=utf-8",
    )
    response["Retry-After"] = str(runlog_settings.STREAM_RETRY_AFTER)
    return response


class Counted:
    """A stream's content that gives its place back when the response is closed (the
    server closes every response, also one whose client left before it began)."""

    def __init__(self, content: Iterator[bytes], place: Place) -> None:
        self._content = content
        self._place = place

    def __iter__(self) -> Counted:
        return self

    def __next__(self) -> bytes:
        return next(self._content)

    def close(self) -> None:
        try:
            close = getattr(self._content, "close", None)
            if close is not None:
                close()
        finally:
            self._place.release()


class CountedAsync:
    """The same for an async stream (ASGI); its generator's end also gives the place back."""

    def __init__(self, content: AsyncIterator[bytes], place: Place) -> None:
        self._content = content
        self._place = place

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._counted()

    async def _counted(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._content:
                yield chunk
        finally:
            self._place.release()

    def close(self) -> None:
        self._place.release()
