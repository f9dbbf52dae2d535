"""The endpoints that serve runs to browsers and scripts: the raw log (log.txt), the live
event stream (events), a range of lines (lines), search, the status (JSON) and cancel.

They answer 403, not a login redirect, to a user who may not see runs: their callers are
EventSource, fetch() and scripts. Streams come from jobs.streaming.follow: a sync generator under
WSGI, an async one under ASGI (Django would buffer a sync one there).
"""

from __future__ import annotations

import re
import select
import socket
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from functools import wraps
from typing import Any

from django.contrib import messages
from django.core.handlers.asgi import ASGIRequest
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    HttpResponseForbidden,
    HttpResponseRedirect,
    JsonResponse,
    QueryDict,
    StreamingHttpResponse,
)
from django.http.response import HttpResponseBase
from django.shortcuts import get_object_or_404
from django.utils import timezone
from django.utils.http import content_disposition_header
from django.views.decorators.http import require_GET, require_POST, require_safe

from jobs.launcher import cancel_run
from jobs.models import Job, LogLine
from jobs.streaming import capacity, formats, search
from jobs.streaming.follow import Event, ViewerDatabase, events, events_async

#: The largest line number there can be (a PositiveIntegerField); an offset beyond it
#: means "I have every line".
MAX_OFFSET = 2_147_483_647
#: Most lines one /lines request returns.
MAX_LINES_PER_REQUEST = 5000

View = Callable[..., HttpResponseBase]


class BadInput(ValueError):
    """A query parameter or header the endpoint cannot use: answered with a 400."""


def _requires(permission: str) -> Callable[[View], View]:
    def decorator(view: View) -> View:
        @wraps(view)
        def checked(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            if not request.user.has_perm(permission):
                return HttpResponseForbidden(f"You need the {permission} permission.", content_type="text/plain")
            try:
                return view(request, *args, **kwargs)
            except (BadInput, search.SearchError) as exc:
                return HttpResponseBadRequest(str(exc), content_type="text/plain; charset=utf-8")

        return checked

    return decorator


def _viewer(view: View) -> View:
    """For the log streams, which a crowd may open at once (a page reloaded by hundreds,
    a proxy reconnecting them all): the request reads its session, its permission and its
    run under a viewer's database slot (jobs.streaming.follow.ViewerDatabase), then gives slot and
    connection back; its stream takes one again for its own reads. The session is read
    lazily, on the first use of request.user, so no query comes before the slot. A crowd
    then waits its turn for a slot instead of opening a connection per viewer, which
    exhausted PostgreSQL's 100 ("too many clients") with 200 viewers."""

    @wraps(view)
    def bounded(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if isinstance(request, ASGIRequest):  # served by a bounded pool of page threads already (jobs.asgi)
            return view(request, *args, **kwargs)
        database = ViewerDatabase()
        try:
            database.acquire()
            return view(request, *args, **kwargs)
        finally:
            database.release()

    return bounded


#: How a yes/no query value may be spelt.
_YES = ("1", "true", "yes", "on")
_NO = ("", "0", "false", "no", "off")


def opens_stream(view_name: str, query: QueryDict) -> bool:
    """Whether a request to the view `view_name` with `query` opens a live stream (jobs.asgi
    opens those on other threads than pages, so that a crowd of viewers arriving at once
    never holds pages up)."""
    if view_name == "jobs:events":
        return True
    return view_name == "jobs:log_text" and query.get("follow", "").lower() in _YES


def _count(value: str | None, name: str, default: int, maximum: int) -> int:
    """A non-negative integer query value; values past `maximum` are `maximum`."""
    if value is None or value == "":
        return default
    value = value.strip()
    if not value.isascii() or not value.isdigit():
        raise BadInput(f"{name} must be a non-negative integer, not {value[:50]!r}.")
    # A string of many digits is surely past maximum; don't make int() parse it.
    digits = value.lstrip("0") or "0"
    return maximum if len(digits) > 12 else min(int(digits), maximum)


def _offset(request: HttpRequest, *, last_event_id: bool = False) -> int:
    """Lines the client already has: `Last-Event-ID` (sent by a reconnecting EventSource)
    wins over `?offset=`."""
    if last_event_id and "HTTP_LAST_EVENT_ID" in request.META:
        return _count(request.META["HTTP_LAST_EVENT_ID"], "Last-Event-ID", 0, MAX_OFFSET)
    return _count(request.GET.get("offset"), "offset", 0, MAX_OFFSET)


def _flag(request: HttpRequest, name: str) -> bool:
    value = request.GET.get(name, "").lower()
    if value in _NO:
        return False
    if value in _YES:
        return True
    raise BadInput(f"{name} must be 1 or 0, not {value[:50]!r}.")


def _stream(
    request: HttpRequest, job: Job, after: int, live: bool, encode: Callable[[Event], bytes]
) -> Iterator[bytes] | AsyncIterator[bytes]:
    """The encoded events of the run, from the generator that suits the server."""
    if isinstance(request, ASGIRequest):

        async def encoded_async() -> AsyncIterator[bytes]:
            async for burst in events_async(job.id, after, live=live):
                yield b"".join([encode(event) for event in burst])

        return encoded_async()
    sock = request.META.get("gunicorn.socket")
    gone = (lambda: _peer_closed(sock)) if sock is not None else None
    encoded: Iterator[bytes] = (encode(event) for event in events(job.id, after, live=live, client_gone=gone))
    return encoded


def _peer_closed(sock: socket.socket) -> bool:
    """True when the client closed its end: readable, with nothing left to read."""
    try:
        readiness = select.poll()  # not select.select: it fails on descriptors past 1023
        readiness.register(sock, select.POLLIN)
        return bool(readiness.poll(0)) and sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except (OSError, ValueError):
        return True


def _streaming_response(
    content: Iterator[bytes] | AsyncIterator[bytes], content_type: str, place: capacity.Place | None = None
) -> StreamingHttpResponse:
    """A stream's response; a live one holds its `place` among the process's streams until it is closed."""
    counted: Iterable[bytes] | AsyncIterable[bytes] = content
    if place is not None:
        counted = (
            capacity.CountedAsync(content, place)
            if isinstance(content, AsyncIterator)
            else capacity.Counted(content, place)
        )
    response = StreamingHttpResponse(counted, content_type=content_type)
    # Every proxy and browser must pass each line on as it comes.
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    response["X-Content-Type-Options"] = "nosniff"
    return response


@require_safe
@_viewer
@_requires("jobs.view_job")
def log_text(request: HttpRequest, job_id: uuid.UUID) -> HttpResponseBase:
    """The stored lines after `offset` as text/plain; with `follow=1`, then the live lines
    until the run ends; with `download=1`, as a file to save."""
    after, follow, download = _offset(request), _flag(request, "follow"), _flag(request, "download")
    job = get_object_or_404(Job, pk=job_id)
    live = follow and not job.is_finished and request.method != "HEAD"
    place = None
    if live and (place := capacity.take_place()) is None:
        return capacity.refused()
    if request.method == "HEAD":  # the headers only: nothing to read, nothing to follow
        content: Iterator[bytes] | AsyncIterator[bytes] = iter(())
    else:
        content = _stream(request, job, after, live, formats.plain_text)
    response = _streaming_response(content, "text/plain; charset=utf-8", place)
    if download:
        response["Content-Disposition"] = content_disposition_header(True, download_name(job))
    return response


_UNSAFE_IN_FILE_NAMES = re.compile(r"[^A-Za-z0-9._-]+")


def download_name(job: Job) -> str:
    """`<job name>-<YYYYMMDD-HHMMSS>.log`, of letters, digits, ".", "_" and "-" only, so that
    every browser and file system keeps it as it is."""
    name = _UNSAFE_IN_FILE_NAMES.sub("_", job.name).strip("._") or "job"
    return f"{name}-{timezone.localtime(job.created_at):%Y%m%d-%H%M%S}.log"


@require_GET
@_viewer
@_requires("jobs.view_job")
def log_events(request: HttpRequest, job_id: uuid.UUID) -> HttpResponseBase:
    """Server-Sent Events: the run's status, its lines after the offset, live lines,
    progress and status changes, heartbeats, and `done` when it ends. With `batch=1`, lines
    come as `lines` events of up to formats.BATCH_LINES lines each."""
    after = _offset(request, last_event_id=True)
    encode = formats.sse_batched if _flag(request, "batch") else formats.sse
    job = get_object_or_404(Job, pk=job_id)
    if job.is_finished and after >= job.line_count:
        # The client has everything: 204 tells EventSource to stop reconnecting. Its type is
        # the stream's, which SSE clients other than browsers check before the status.
        return HttpResponse(status=204, content_type="text/event-stream")
    place = capacity.take_place()
    if place is None:
        return capacity.refused()
    content = _stream(request, job, after, True, encode)
    if isinstance(content, AsyncIterator):
        content = _prefixed_async(formats.sse_start(), content)
    else:
        content = _prefixed(formats.sse_start(), content)
    return _streaming_response(content, "text/event-stream; charset=utf-8", place)


def _prefixed(first: bytes, rest: Iterable[bytes]) -> Iterator[bytes]:
    yield first
    yield from rest


async def _prefixed_async(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield first
    async for chunk in rest:
        yield chunk


@require_GET
@_requires("jobs.view_job")
def log_lines(request: HttpRequest, job_id: uuid.UUID) -> HttpResponse:
    """Stored lines offset+1 .. offset+limit as JSON (the job page loads earlier lines so)."""
    after = _offset(request)
    limit = _count(request.GET.get("limit"), "limit", 1000, MAX_LINES_PER_REQUEST)
    job = get_object_or_404(Job, pk=job_id)
    rows = LogLine.objects.rows_after(job.id, after, limit)
    body = f'{{"line_count":{job.line_count},"lines":[{",".join(formats.line_data(rows))}]}}'
    return HttpResponse(body, content_type="application/json")


@require_GET
@_requires("jobs.view_job")
def search_log(request: HttpRequest, job_id: uuid.UUID) -> HttpResponse:
    """The numbers of the stored lines after `after` that contain `q` (ignoring case unless
    `case=1`; a Python regular expression with `regex=1`): at most `limit` of them, the
    last line searched, and whether later lines may match (ask again after that line)."""
    query = search.make_query(
        request.GET.get("q", ""), regex=_flag(request, "regex"), case_sensitive=_flag(request, "case")
    )
    after = _count(request.GET.get("after"), "after", 0, MAX_OFFSET)
    limit = _count(request.GET.get("limit"), "limit", search.DEFAULT_MATCHES, search.MAX_MATCHES)
    job = get_object_or_404(Job, pk=job_id)
    found = search.find(job, query, after, limit)
    return JsonResponse(
        {"matches": found.numbers, "line_count": job.line_count, "more": found.more, "searched": found.searched}
    )


@require_safe
@_requires("jobs.view_job")
def job_status(request: HttpRequest, job_id: uuid.UUID) -> HttpResponse:
    job = get_object_or_404(Job.objects.select_related("launched_by", "cancelled_by"), pk=job_id)
    return HttpResponse(formats.to_json(formats.status_data(job)), content_type="application/json")


@require_POST
@_requires("jobs.change_job")
def cancel_job(request: HttpRequest, job_id: uuid.UUID) -> HttpResponse:
    """Ask the run to stop. JSON for fetch() (409 if it had already finished); a redirect
    to the job page for a plain form."""
    job = get_object_or_404(Job, pk=job_id)
    requested = cancel_run(job.id, request.user)
    if "application/json" in request.headers.get("Accept", ""):
        job = Job.objects.select_related("launched_by", "cancelled_by").get(pk=job.id)
        return JsonResponse(formats.status_data(job), status=202 if requested else 409)
    if requested:
        messages.success(request, "Cancel requested: the run stops at its next output or checkpoint.")
    else:
        messages.info(request, "This run had already finished.")
    return HttpResponseRedirect(job.get_absolute_url())
