"""Runlog's ASGI application: pages on a pool of threads, live streams as coroutines.

Django's own ASGI handler runs a project of sync middleware and views by hopping to a
thread for each middleware and for the view, through one thread per request; here each
request's whole middleware chain and view run in one hop on a pool of
RUNLOG_PAGE_THREADS threads, each keeping its database connection (a request that opens a
live stream runs on the viewers' own threads instead). What a view returns is
sent from the event loop: an async stream (the log streams) is iterated there, so an idle
viewer costs a coroutine and no thread, and however many streams are open, the pool stays
free for pages.

On the server's SIGTERM (a deploy) the process starts ending its runs and then its
streams at once, as config/gunicorn.conf.py does for threaded workers: the server waits
for open connections before it exits, and streams only end when told to.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import logging
import signal
import threading
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing
from tempfile import SpooledTemporaryFile
from typing import Any

from django.core import signals
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.core.handlers.base import BaseHandler
from django.db import connections
from django.http import FileResponse, QueryDict
from django.http.response import HttpResponseBase
from django.urls import Resolver404, resolve, set_script_prefix

from jobs.conf import runlog_settings
from jobs.streaming.endpoints import opens_stream
from jobs.streaming.readers import viewer_readers

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Mapping[str, Any]]]
Send = Callable[[Mapping[str, Any]], Awaitable[None]]

#: Allocations (less deallocations) between two collections of the youngest generation.
YOUNG_COLLECTION_THRESHOLD = 20_000


class RunlogASGIHandler(ASGIHandler):
    def __init__(self) -> None:
        BaseHandler.__init__(self)
        self.load_middleware(is_async=False)
        self._pages = ThreadPoolExecutor(runlog_settings.PAGE_THREADS, thread_name_prefix="runlog-page")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self.handle(scope, receive, send)
        else:
            raise ValueError(f"Runlog serves HTTP, not {scope['type']}.")

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        # Streams open on the viewers' own threads: a crowd of viewers arriving at once
        # (a deploy's reconnections) then waits its turn there, and pages go on meanwhile.
        threads = viewer_readers() if _opens_stream(scope) else self._pages
        try:
            response = await self._in_thread(threads, self._respond, scope, body_file)
            if not response.streaming:
                await self.send_response(response, send)
                return
            # A stream lasts until it ends or its client leaves, whichever comes first.
            sending = asyncio.ensure_future(self._send_stream(response, send))
            leaving = asyncio.ensure_future(self.listen_for_disconnect(receive))
            try:
                await asyncio.wait((sending, leaving), return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (leaving, sending):
                    task.cancel()
                    try:
                        await task
                    except (asyncio.CancelledError, RequestAborted, OSError):
                        pass
                await self._in_thread(threads, response.close)
        finally:
            body_file.close()

    def _respond(self, scope: Scope, body_file: SpooledTemporaryFile[bytes]) -> HttpResponseBase:
        """In a page thread: the request's middleware and view, as WSGIHandler runs them. A
        complete response is closed here (request_finished: its thread's connection is
        checked); a stream is closed once sent."""
        set_script_prefix(get_script_prefix(scope))
        signals.request_started.send(sender=self.__class__, scope=scope)
        request, response = self.create_request(scope, body_file)
        if request is not None:
            response = self.get_response(request)
        assert response is not None
        if isinstance(response, FileResponse):
            response.block_size = self.chunk_size
        # The pool's threads are few and last: each keeps its connection across requests
        # (checked at the start of each, CONN_HEALTH_CHECKS) instead of opening one per
        # request, as CONN_MAX_AGE=0 would under WSGI's many threads.
        for connection in connections.all(initialized_only=True):
            connection.close_at = None
        if not response.streaming:
            response.close()
        return response

    async def _send_stream(self, response: Any, send: Send) -> None:
        await send({"type": "http.response.start", "status": response.status_code, "headers": _headers(response)})
        if response.is_async:
            async with aclosing(aiter(response)) as content:
                async for part in content:
                    await send({"type": "http.response.body", "body": part, "more_body": True})
        else:  # a file, say: read in a page thread, a chunk at a time
            chunks = iter(response.streaming_content)
            while (part := await self._in_thread(self._pages, next, chunks, None)) is not None:
                await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body"})

    async def _in_thread(self, threads: ThreadPoolExecutor, call: Callable[..., Any], *args: Any) -> Any:
        context = contextvars.copy_context()  # the script prefix and the like, as in the loop
        return await asyncio.get_running_loop().run_in_executor(threads, context.run, call, *args)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                _end_runs_on_sigterm()
                _collect_garbage_for_streams()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return


def _opens_stream(scope: Scope) -> bool:
    path = scope["path"].removeprefix(scope.get("root_path", "")) or "/"
    try:
        match = resolve(path)
    except Resolver404:
        return False
    return opens_stream(match.view_name, QueryDict(scope.get("query_string", b"")))


def _headers(response: HttpResponseBase) -> list[tuple[bytes, bytes]]:
    headers = [(name.encode("ascii"), value.encode("latin1")) for name, value in response.items()]
    headers += [
        (b"Set-Cookie", cookie.output(header="").encode("ascii").strip()) for cookie in response.cookies.values()
    ]
    return headers


def _collect_garbage_for_streams() -> None:
    """Python's cyclic garbage collector stops the event loop while it runs, and every
    stream it serves waits. What exists once the app has loaded lives as long as the
    process: it is never scanned again (gc.freeze). A crowd's wake-ups allocate objects by
    the thousand: the youngest generation is collected every YOUNG_COLLECTION_THRESHOLD
    allocations rather than every 700, since each collection has a cost of its own."""
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, middle, oldest)


def _end_runs_on_sigterm() -> None:
    """Chain onto the server's own SIGTERM handler (it stops taking connections, then waits
    for the open ones): end this process's runs and streams meanwhile, in the background,
    since a signal handler must return at once."""
    if threading.current_thread() is not threading.main_thread():
        return  # a server that does not run its loop in the main thread handles no signal here
    server_handler = signal.getsignal(signal.SIGTERM)

    def handle_sigterm(signum: int, frame: Any) -> None:
        from jobs.running.runner import get_runner

        threading.Thread(target=get_runner().shut_down, name="runlog-shutdown").start()
        if callable(server_handler):
            server_handler(signum, frame)

    signal.signal(signal.SIGTERM, handle_sigterm)
