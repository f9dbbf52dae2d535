"""How runs and their lines are written on the wire: the status JSON, the Server-Sent
Events stream and the plain-text log (the contracts of docs/architecture.md)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from functools import lru_cache
from json.encoder import encode_basestring  # the C encoder json.dumps uses for str
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder

from jobs.models import Job, Row
from jobs.streaming.follow import Done, Event, Heartbeat, Lines, Progress, Status

#: Milliseconds EventSource waits before it reconnects (the stream's first line).
SSE_RETRY_MS = 2000
#: Most lines in one `lines` event of the batched event stream.
BATCH_LINES = 1000

_json = DjangoJSONEncoder(ensure_ascii=False, separators=(",", ":"))


def status_data(job: Job) -> dict[str, Any]:
    """The JSON of /jobs/<id>/status and of the `status` and `done` events."""
    duration = job.duration
    has_progress = job.progress_done is not None or job.progress_total is not None
    return {
        "id": str(job.id),
        "name": job.name,
        "params": job.params,
        "status": job.status,
        "finished": job.is_finished,
        "line_count": job.line_count,
        "created_at": _iso(job.created_at),
        "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at),
        "duration": None if duration is None else round(duration.total_seconds(), 3),
        "error": job.error,
        "cancel_requested": job.cancel_requested,
        "launched_by": job.launched_by.get_username() if job.launched_by else None,
        "cancelled_by": job.cancelled_by.get_username() if job.cancelled_by else None,
        "progress": _progress_data(job.progress_done, job.progress_total, job.progress_message)
        if has_progress
        else None,
    }


def _iso(moment: datetime | None) -> str | None:
    """The same form as the lines' times, to the microsecond."""
    return None if moment is None else moment.isoformat()


def _progress_data(done: float | None, total: float | None, message: str) -> dict[str, Any]:
    return {"done": done, "total": total, "message": message}


def to_json(data: Any) -> str:
    return _json.encode(data)


def line_data(rows: list[Row], *, as_events: bool = False) -> list[str]:
    """Each row as the JSON object of the event stream, {"n","stream","t","text"}, or (as_events)
    as a whole SSE event with its id. Built by hand: the lines of a replay are most of what
    a server sends, and this is about 4x faster than json.dumps of a dict. Lines stored
    together share one timestamp, formatted once."""
    out = []
    last_time: datetime | str | None = None
    iso = ""
    for number, stream, created_at, text in rows:
        if created_at != last_time:
            last_time, iso = created_at, _line_time(created_at)
        data = f'{{"n":{number},"stream":"{stream}","t":"{iso}","text":{encode_basestring(text)}}}'
        out.append(f"id: {number}\ndata: {data}\n\n" if as_events else data)
    return out


@lru_cache(maxsize=4096)
def _line_time(created_at: datetime | str) -> str:
    """ISO 8601 in UTC, from a datetime or from a database's text: SQLite's naive
    "2026-11-21 20:34:07.058810" (UTC, as Django stores it) or PostgreSQL's
    "2026-11-21 20:34:07.05881+00". Cached: a run's viewers replay the same lines, and
    parsing the time is most of what encoding a line costs."""
    moment = datetime.fromisoformat(created_at) if isinstance(created_at, str) else created_at
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.isoformat()


def sse_start() -> bytes:
    return f"retry: {SSE_RETRY_MS}\n\n".encode()


def sse(event: Event) -> bytes:
    """One event (or, for Lines, one event per line) in text/event-stream format."""
    if isinstance(event, Lines):
        return _encoded_once(event, "sse", lambda rows: "".join(line_data(rows, as_events=True)).encode())
    if isinstance(event, Status):
        return f"event: status\ndata: {to_json(status_data(event.job))}\n\n".encode()
    if isinstance(event, Progress):
        return _progress_event(event)
    if isinstance(event, Done):
        return f"event: done\ndata: {to_json(status_data(event.job))}\n\n".encode()
    if isinstance(event, Heartbeat):
        return b": keep-alive\n\n"
    raise TypeError(f"not an event: {event!r}")


@lru_cache(maxsize=256)
def _progress_event(progress: Progress) -> bytes:
    """The viewers of a run are sent the same progress: encoded once for them all."""
    data = _progress_data(progress.done, progress.total, progress.message)
    return f"event: progress\ndata: {to_json(data)}\n\n".encode()


def sse_batched(event: Event) -> bytes:
    """As `sse`, but lines go as `event: lines` events of up to BATCH_LINES lines each: `id`
    is the number of the event's last line (where a reconnection resumes) and `data` the
    JSON array of its line objects, in order. A page then takes in a flood of lines in a
    few large events rather than one event per line."""
    if isinstance(event, Lines):
        return _encoded_once(event, "sse-batched", _line_batches)
    return sse(event)


def _line_batches(rows: list[Row]) -> bytes:
    events = []
    for start in range(0, len(rows), BATCH_LINES):
        batch = rows[start : start + BATCH_LINES]
        events.append(f"event: lines\nid: {batch[-1][0]}\ndata: [{','.join(line_data(batch))}]\n\n")
    return "".join(events).encode()


def plain_text(event: Event) -> bytes:
    """The raw log: each line's text and a newline; nothing else is part of it."""
    if isinstance(event, Lines):
        return _encoded_once(event, "text", lambda rows: "".join([row[3] + "\n" for row in rows]).encode())
    return b""


def _encoded_once(event: Lines, encoding: str, encode: Callable[[list[Row]], bytes]) -> bytes:
    """Live lines go to every viewer of their run: encoded once, for all of them."""
    if event.source is None:
        return encode(event.rows)
    encoded = event.source.cache.get(encoding)
    if encoded is None:
        encoded = event.source.cache[encoding] = encode(event.rows)
    return encoded
