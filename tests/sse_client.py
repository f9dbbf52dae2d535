"""A small incremental HTTP/1.1 client for streaming responses, and a Server-Sent Events
parser on top of it, for tests and benchmarks that watch a live server.

Why not urllib or http.client: a test of streaming must see *when* each byte arrives,
must be able to stop reading mid-event and close the socket at an exact point (as a
browser tab that is closed does), and must not be helped by any buffering of its own.
So this reads a raw socket, decodes `Transfer-Encoding: chunked` (or reads until
Content-Length / the server's close), and stamps each piece of body with the
`time.monotonic()` and `time.time()` of the `recv()` that brought it.

    with HttpStream(url + "/events", headers={"Cookie": cookie, "Last-Event-ID": "41"}) as stream:
        for event in SseReader(stream):
            ...
"""

from __future__ import annotations

import json
import select
import socket
import struct
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

#: Seconds a single recv() may wait before the client gives up: a generous bound that
#: only a stuck server reaches.
DEFAULT_TIMEOUT = 60.0


class HttpError(Exception):
    """The server answered something that is not HTTP, or closed too early."""


@dataclass
class Piece:
    """Body bytes, with the moment the recv() that brought them returned."""

    data: bytes
    monotonic: float
    wall: float


class HttpStream:
    """One request on its own connection; the response's body is read incrementally.

    Sends `Connection: close` unless told otherwise, so that the end of the body is also
    the end of the connection (the server closing is part of what tests check)."""

    def __init__(
        self,
        url: str,
        *,
        method: str = "GET",
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        recv_size: int = 65536,
        defer_head: bool = False,
        keep_alive: bool = False,
    ) -> None:
        """Connect, send the request and (unless `defer_head`) read the response's head;
        with `defer_head`, call `read_head()` when the answer is wanted. With `keep_alive`,
        the request asks to keep the connection open (as browsers do): the end of a body
        is then only its last chunk, and `at_eof()` would wait for the server's idle close."""
        parts = urlsplit(url)
        if parts.scheme != "http" or parts.hostname is None:
            raise ValueError(f"only http:// URLs: {url!r}")
        self.url = url
        self.recv_size = recv_size
        self.keep_alive = keep_alive
        self.started = time.monotonic()
        self.sock = socket.create_connection((parts.hostname, parts.port or 80), timeout=timeout)
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        connection = "keep-alive" if keep_alive else "close"
        lines = [f"{method} {target} HTTP/1.1", f"Host: {parts.netloc}", f"Connection: {connection}"]
        if body is not None:
            lines.append(f"Content-Length: {len(body)}")
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b""))
        self._buffer = b""
        self._buffer_stamp = (0.0, 0.0)
        self._eof = False
        self.closed = False
        self.status, self.reason, self.headers = 0, "", {}
        self.header_time = 0.0
        self._body: Iterator[Piece] = iter(())
        if not defer_head:
            self.read_head()

    def answered(self, timeout: float = 0.0) -> bool:
        """True if the server has sent something (or closed) within `timeout` seconds."""
        if self._buffer:
            return True
        readable, _, _ = select.select([self.sock], [], [], timeout)
        return bool(readable)

    def read_head(self) -> None:
        """Read the status line and headers (waiting for them)."""
        self.status, self.reason, self.headers = self._read_head()
        self.header_time = time.monotonic()
        self._body = self._body_pieces()

    # --- the response head -----------------------------------------------------------------

    def _recv(self) -> bool:
        """Read what the socket has into the buffer; False at the end of the connection."""
        if self._eof:
            return False
        data = self.sock.recv(self.recv_size)
        self._buffer_stamp = (time.monotonic(), time.time())
        if not data:
            self._eof = True
            return False
        self._buffer += data
        return True

    def _read_until(self, marker: bytes) -> bytes:
        while marker not in self._buffer:
            if not self._recv():
                raise HttpError(f"connection closed before {marker!r}; got {self._buffer[:200]!r}")
        head, self._buffer = self._buffer.split(marker, 1)
        return head

    def _read_exactly(self, size: int) -> bytes:
        while len(self._buffer) < size:
            if not self._recv():
                raise HttpError(f"connection closed {size - len(self._buffer)} bytes early")
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def _read_head(self) -> tuple[int, str, dict[str, str]]:
        while True:
            head = self._read_until(b"\r\n\r\n").decode("latin-1")
            status_line, *header_lines = head.split("\r\n")
            version, _, rest = status_line.partition(" ")
            if not version.startswith("HTTP/"):
                raise HttpError(f"not an HTTP response: {status_line!r}")
            code, _, reason = rest.partition(" ")
            headers: dict[str, str] = {}
            for line in header_lines:
                name, _, value = line.partition(":")
                key = name.strip().lower()
                # Repeated headers (Set-Cookie) are joined, as RFC 9110 allows for most.
                headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
            if int(code) != 100:  # an interim 100 Continue is followed by the real answer
                return int(code), reason, headers

    # --- the body ---------------------------------------------------------------------------

    def _take_buffer(self) -> Piece:
        piece = Piece(self._buffer, *self._buffer_stamp)
        self._buffer = b""
        return piece

    def _body_pieces(self) -> Iterator[Piece]:
        if self.status in (204, 304) or 100 <= self.status < 200:
            return
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            yield from self._chunked()
        elif "content-length" in self.headers:
            left = int(self.headers["content-length"])
            while left > 0:
                if not self._buffer and not self._recv():
                    raise HttpError(f"connection closed {left} bytes before the end of the body")
                piece = self._take_buffer()
                if len(piece.data) > left:  # nothing may follow on a Connection: close answer
                    raise HttpError("more bytes than Content-Length")
                left -= len(piece.data)
                yield piece
        else:  # the body ends when the server closes the connection
            while self._buffer or self._recv():
                yield self._take_buffer()

    def _chunked(self) -> Iterator[Piece]:
        while True:
            size_line = self._read_until(b"\r\n").split(b";", 1)[0].strip()
            size = int(size_line, 16)
            if size == 0:
                self._read_until(b"\r\n")  # no trailers are expected: the final CRLF
                return
            left = size
            while left > 0:
                if not self._buffer and not self._recv():
                    raise HttpError(f"connection closed inside a chunk ({left} bytes missing)")
                data, self._buffer = self._buffer[:left], self._buffer[left:]
                left -= len(data)
                yield Piece(data, *self._buffer_stamp)
            self._read_exactly(2)  # the CRLF after the chunk's data

    def pieces(self) -> Iterator[Piece]:
        """The body as it arrives; ends with the body."""
        return self._body

    def body_ended(self) -> bool:
        """Read what is left of the body; True if nothing was (its end had been reached)."""
        return not any(piece.data for piece in self._body)

    def read_all(self) -> bytes:
        return b"".join(piece.data for piece in self._body)

    def at_eof(self, timeout: float = DEFAULT_TIMEOUT) -> bool:
        """True when the body ends here (no more body bytes; a chunked body's last chunk
        may still be on its way) and then the server closes the connection, within
        `timeout`; False if it sent more bytes."""
        self.sock.settimeout(timeout)
        if any(piece.data for piece in self._body):
            return False
        return not self._buffer and not self._recv()

    # --- closing ---------------------------------------------------------------------------

    def close(self, *, reset: bool = False) -> None:
        """Close the connection, whatever was read. With `reset`, an abortive close (RST
        instead of FIN), as when a client process dies or its network goes away."""
        if self.closed:
            return
        self.closed = True
        if reset:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def __enter__(self) -> HttpStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def request(
    url: str, *, method: str = "GET", headers: Mapping[str, str] | None = None, body: bytes | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> tuple[int, dict[str, str], bytes]:  # fmt: skip
    """A whole request: (status, headers, body)."""
    with HttpStream(url, method=method, headers=headers, body=body, timeout=timeout) as stream:
        return stream.status, stream.headers, stream.read_all()


# --- Server-Sent Events -----------------------------------------------------------------------


@dataclass
class SseEvent:
    """One dispatched event (or a comment, with event == ":"), stamped with the arrival of
    the bytes that completed it."""

    event: str
    data: str
    id: str | None
    retry: int | None
    monotonic: float
    wall: float
    fields: list[tuple[str, str]] = field(default_factory=list)

    @property
    def json(self) -> Any:
        return json.loads(self.data)

    @property
    def is_comment(self) -> bool:
        return self.event == ":"


#: (number, stream, ISO time, text): a line as a run's events stream sends it and as it is stored.
Line = tuple[int, str, str, str]


def line_of(event: SseEvent) -> Line:
    """The line an id/data event of a run's stream carries; its `id:` must be its number."""
    data = event.json
    assert event.id == str(data["n"]), f"event id {event.id!r} is not the line number {data['n']}"
    return (data["n"], data["stream"], data["t"], data["text"])


class SseParser:
    """The text/event-stream grammar (WHATWG HTML, "Parsing an event stream"): lines end
    with LF, CRLF or CR; a blank line dispatches the event; `id`, `event`, `data`, `retry`
    fields; lines starting with ':' are comments (returned as events of type ':', so that
    heartbeats can be seen). An event without data is not dispatched, except that a block
    with only `retry:` or `id:` is reported (as type "") so that tests can see it."""

    def __init__(self) -> None:
        self._pending = b""
        self._fields: list[tuple[str, str]] = []
        self.last_event_id: str | None = None

    def feed(self, data: bytes, monotonic: float = 0.0, wall: float = 0.0) -> list[SseEvent]:
        events: list[SseEvent] = []
        self._pending += data
        while True:
            cut = _line_end(self._pending)
            if cut is None:
                return events
            end, after = cut
            line = self._pending[:end].decode("utf-8")
            self._pending = self._pending[after:]
            if line == "":
                event = self._dispatch(monotonic, wall)
                if event is not None:
                    events.append(event)
            elif line.startswith(":"):
                events.append(SseEvent(":", line[1:].lstrip(" "), None, None, monotonic, wall))
            else:
                name, colon, value = line.partition(":")
                if colon and value.startswith(" "):
                    value = value[1:]
                self._fields.append((name, value))

    def _dispatch(self, monotonic: float, wall: float) -> SseEvent | None:
        fields, self._fields = self._fields, []
        if not fields:
            return None
        data: list[str] = []
        event_type, retry, event_id = "message", None, None
        for name, value in fields:
            if name == "data":
                data.append(value)
            elif name == "event":
                event_type = value
            elif name == "id" and "\0" not in value:
                event_id = self.last_event_id = value
            elif name == "retry" and value.isdigit():
                retry = int(value)
        if not data:
            event_type = ""
        return SseEvent(event_type, "\n".join(data), event_id, retry, monotonic, wall, fields)

    @property
    def partial(self) -> bool:
        """True while an event has begun but not been completed by its blank line."""
        return bool(self._pending or self._fields)


def _line_end(buffer: bytes) -> tuple[int, int] | None:
    """(end of the first line, start of the next) or None if no line is complete. A CR
    at the very end of the buffer may be the first half of a CRLF: wait for more."""
    lf, cr = buffer.find(b"\n"), buffer.find(b"\r")
    if cr == -1 or (lf != -1 and lf < cr):
        return None if lf == -1 else (lf, lf + 1)
    if cr + 1 == len(buffer):
        return None
    return (cr, cr + 2) if buffer[cr + 1 : cr + 2] == b"\n" else (cr, cr + 1)


def sse_events(stream: HttpStream) -> Iterator[SseEvent]:
    """The events of a text/event-stream body, each as soon as its last byte arrives."""
    parser = SseParser()
    for piece in stream.pieces():
        yield from parser.feed(piece.data, piece.monotonic, piece.wall)


@dataclass
class TextLine:
    text: str
    monotonic: float
    wall: float


def text_lines(stream: HttpStream) -> Iterator[TextLine]:
    """The newline-terminated lines of a text body, each as soon as its newline arrives; an
    unterminated tail is yielded at the end."""
    pending = b""
    stamp = (0.0, 0.0)
    for piece in stream.pieces():
        pending += piece.data
        stamp = (piece.monotonic, piece.wall)
        *complete, pending = pending.split(b"\n")
        for line in complete:
            yield TextLine(line.decode("utf-8"), *stamp)
    if pending:
        yield TextLine(pending.decode("utf-8"), *stamp)
