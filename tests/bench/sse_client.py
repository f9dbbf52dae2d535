"""The streaming benchmark's client: many HTTP streams read in one process, with no Django.

    python -m tests.bench.sse_client SPEC.json OUT.json

It runs in its own process so that it never shares a GIL with the server or the job it
measures. While the streams run it only reads: one epoll loop, non-blocking sockets,
recv() of up to 1 MiB, and the wall-clock time of each recv. Everything else (de-chunking,
parsing events, latencies, digests) happens after the last stream has ended, so the
client's own cost while measuring is a syscall and an append per read. It prints "ready"
on stdout once every stream has its first bytes, and "ended" once every stream has ended
(before it parses anything).

SIGUSR1 ends it early, as if its timeout had passed.

SPEC: host, port, cookie, paths (one stream per path), mode ("sse", "text" or "clock":
newline-separated "<time.time()>" lines on a raw socket, the benchmark's loopback
baseline), timeout (seconds for everything), clock_lines (a line's text starts with the
time.time() of its print(): latency is measured from it).

OUT: per stream its status, first-byte time, end time, lines, whether the numbers were
1..N in order, the `done` event, the `:` comments (heartbeats), a digest of (number,
stream, text); and over all streams the percentiles of print -> arrival, print -> `t`
(the flusher's timestamp of the line) and `t` -> arrival, counting only lines printed
after the stream's first byte (earlier ones came from the database replay, which is not
live latency). The client's CPU time says whether it kept up.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import resource
import selectors
import signal
import socket
import sys
import time
from array import array
from datetime import datetime
from typing import Any

RECV_BYTES = 1 << 20


class Stream:
    __slots__ = (
        "path", "sock", "buffer", "recv_ends", "recv_times", "first_byte", "ended", "sent_at", "error", "local_port"
    )  # fmt: skip

    def __init__(self, path: str) -> None:
        self.path = path
        self.sock: socket.socket | None = None
        self.buffer = bytearray()
        self.recv_ends = array("q")
        self.recv_times = array("d")
        self.first_byte: float | None = None
        self.ended: float | None = None
        self.sent_at = 0.0
        self.error = ""
        self.local_port = 0


def run(spec: dict[str, Any]) -> dict[str, Any]:
    host, port, mode = spec["host"], spec["port"], spec["mode"]
    streams = [Stream(path) for path in spec["paths"]]
    stopping: list[int] = []
    signal.signal(signal.SIGUSR1, lambda signum, frame: stopping.append(signum))
    selector = selectors.DefaultSelector()
    started = time.time()
    cpu_started = _cpu()
    for stream in streams:
        sock = socket.create_connection((host, port), timeout=30)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        stream.local_port = sock.getsockname()[1]
        if mode != "clock":
            request = (
                f"GET {stream.path} HTTP/1.1\r\nHost: {host}:{port}\r\nCookie: {spec['cookie']}\r\n"
                f"Accept: {'text/event-stream' if mode == 'sse' else 'text/plain'}\r\n"
                "Cache-Control: no-cache\r\nConnection: close\r\n\r\n"
            )
            stream.sent_at = time.time()
            sock.sendall(request.encode())
        else:
            stream.sent_at = time.time()
        sock.setblocking(False)
        stream.sock = sock
        selector.register(sock, selectors.EVENT_READ, stream)
    open_streams = len(streams)
    waiting_first = len(streams)
    deadline = started + spec["timeout"]
    while open_streams:
        remaining = deadline - time.time()
        if remaining <= 0 or stopping:
            for key in list(selector.get_map().values()):
                key.data.error = "timeout"
            break
        for key, _ in selector.select(min(remaining, 1.0)):
            stream = key.data
            try:
                data = stream.sock.recv(RECV_BYTES)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError as exc:
                data, stream.error = b"", str(exc)
            now = time.time()
            if data:
                stream.buffer += data
                stream.recv_ends.append(len(stream.buffer))
                stream.recv_times.append(now)
                if stream.first_byte is None:
                    stream.first_byte = now
                    waiting_first -= 1
                    if not waiting_first:
                        print("ready", flush=True)
                if mode == "clock" and stream.buffer.endswith(b"end\n"):
                    data = b""
            if not data:
                stream.ended = now
                selector.unregister(stream.sock)
                stream.sock.close()
                open_streams -= 1
    wall = time.time() - started
    cpu = _cpu() - cpu_started
    print("ended", flush=True)  # the benchmark stops its clocks; parsing comes now
    for stream in streams:
        if stream.sock is not None and stream.ended is None:
            stream.sock.close()
    return analyse(streams, spec, wall, cpu)


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --- After the run ------------------------------------------------------------------------------


class Latencies:
    def __init__(self) -> None:
        self.print_to_arrival = array("d")
        self.print_to_t = array("d")
        self.t_to_arrival = array("d")
        self.excluded = 0  # lines printed before the stream's first byte (replayed)


def analyse(streams: list[Stream], spec: dict[str, Any], wall: float, cpu: float) -> dict[str, Any]:
    latencies = Latencies()
    results = []
    for stream in streams:
        if spec["mode"] == "clock":
            results.append(_analyse_clock(stream, latencies))
        else:
            results.append(_analyse_http(stream, spec, latencies))
        stream.buffer = bytearray()  # free as we go
    if spec.get("latency_file"):
        with open(spec["latency_file"], "wb") as out:
            latencies.print_to_arrival.tofile(out)
    return {
        "streams": results,
        "latency": {
            "print_to_arrival": summary(latencies.print_to_arrival),
            "print_to_t": summary(latencies.print_to_t),
            "t_to_arrival": summary(latencies.t_to_arrival),
            "excluded_replayed_lines": latencies.excluded,
        },
        "wall_s": wall,
        "client_cpu_s": cpu,
        "client_cpu_share": cpu / wall if wall else 0.0,
    }


def _analyse_clock(stream: Stream, latencies: Latencies) -> dict[str, Any]:
    body = bytes(stream.buffer)
    position = 0
    lines = 0
    ends, times = stream.recv_ends, stream.recv_times
    for line in body.split(b"\n"):
        position += len(line) + 1
        if not line or line == b"end":
            continue
        lines += 1
        arrival = times[bisect.bisect_left(ends, position)]
        latencies.print_to_arrival.append(arrival - float(line))
    return {"lines": lines, "first_byte": stream.first_byte, "ended": stream.ended, "error": stream.error}


def _analyse_http(stream: Stream, spec: dict[str, Any], latencies: Latencies) -> dict[str, Any]:
    raw = bytes(stream.buffer)
    result: dict[str, Any] = {
        "path": stream.path,
        "local_port": stream.local_port,
        "sent_at": stream.sent_at,
        "first_byte": stream.first_byte,
        "ended": stream.ended,
        "error": stream.error,
        "bytes": len(raw),
    }
    header_end = raw.find(b"\r\n\r\n")
    if header_end < 0:
        result.update(status=0, lines=0, complete=False)
        return result
    head = raw[:header_end].decode("latin-1").split("\r\n")
    result["status"] = int(head[0].split()[1])
    headers = {name.strip().lower(): value.strip() for name, _, value in (h.partition(":") for h in head[1:])}
    body_start = header_end + 4
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body, segments = _dechunk(raw, body_start)
    else:
        body, segments = raw[body_start:], [(0, body_start)]
    result["body_bytes"] = len(body)
    if stream.recv_times:
        # The last byte of the body: the time a client has everything.
        result["last_byte"] = stream.recv_times[-1]
    arrival = _ArrivalClock(segments, stream.recv_ends, stream.recv_times)
    if spec["mode"] == "text":
        result["lines"] = body.count(b"\n")
        result["digest"] = hashlib.sha256(body).hexdigest()
        return result
    before = len(latencies.print_to_arrival)
    result.update(_parse_sse(body, arrival, stream.first_byte or 0.0, spec.get("clock_lines", False), latencies))
    own = sorted(latencies.print_to_arrival[before:])
    result["p50"], result["p99"] = percentile(own, 50), percentile(own, 99)
    # This stream's print -> arrival latencies are print_to_arrival[offset:offset + count]
    # of the binary file OUT.lat (native doubles).
    result["latency_offset"], result["latency_count"] = before, len(own)
    return result


def _dechunk(raw: bytes, position: int) -> tuple[bytes, list[tuple[int, int]]]:
    """The body of a chunked response, and (body offset, raw offset) where each chunk starts."""
    parts = []
    segments = []
    size = 0
    while True:
        line_end = raw.find(b"\r\n", position)
        if line_end < 0:
            break  # cut short
        length = int(raw[position:line_end].split(b";")[0], 16)
        if length == 0:
            break
        start = line_end + 2
        segments.append((size, start))
        parts.append(raw[start : start + length])
        size += length
        position = start + length + 2
    return b"".join(parts), segments


class _ArrivalClock:
    """The arrival time of a body offset: the time of the recv() that brought its byte."""

    def __init__(self, segments: list[tuple[int, int]], recv_ends: array, recv_times: array) -> None:
        self.body_starts = [body for body, _ in segments]
        self.segments = segments
        self.recv_ends = recv_ends
        self.recv_times = recv_times

    def at(self, body_offset: int) -> float:
        index = bisect.bisect_right(self.body_starts, body_offset) - 1
        body_start, raw_start = self.segments[max(index, 0)]
        raw_offset = raw_start + (body_offset - body_start)
        return self.recv_times[min(bisect.bisect_right(self.recv_ends, raw_offset), len(self.recv_times) - 1)]


def _parse_sse(
    body: bytes, arrival: _ArrivalClock, connected: float, clock_lines: bool, latencies: Latencies
) -> dict[str, Any]:
    digest = hashlib.sha256()
    expected = None
    contiguous = True
    lines = 0
    first = last = None
    done = None
    events: dict[str, int] = {}
    comments = 0  # `:` lines: the server's heartbeats
    t_cache: dict[str, float] = {}
    position = 0
    length = len(body)
    while position < length:
        end = body.find(b"\n\n", position)
        if end < 0:
            break
        block = body[position:end]
        position = end + 2
        if block.startswith(b"id: "):
            id_end = block.index(b"\n")
            number = int(block[4:id_end])
            data = json.loads(block[id_end + 7 :])
            if expected is not None and number != expected:
                contiguous = False
            if data["n"] != number:
                contiguous = False
            expected = number + 1
            first = number if first is None else first
            last = number
            lines += 1
            digest.update(f"{number}\t{data['stream']}\t{data['text']}\n".encode())
            if clock_lines:
                text = data["text"]
                space = text.find(" ")
                try:
                    printed = float(text[:space])
                except ValueError:
                    continue  # not a timed line ("Done")
                if printed < connected:
                    latencies.excluded += 1
                    continue
                came = arrival.at(end + 1)
                stamp = data["t"]
                flushed = t_cache.get(stamp)
                if flushed is None:
                    flushed = t_cache[stamp] = datetime.fromisoformat(stamp).timestamp()
                latencies.print_to_arrival.append(came - printed)
                latencies.print_to_t.append(flushed - printed)
                latencies.t_to_arrival.append(came - flushed)
            continue
        if block.startswith(b"event: "):
            name = block[7 : block.index(b"\n")].decode()
            events[name] = events.get(name, 0) + 1
            if name == "done":
                done = json.loads(block[block.index(b"\ndata: ") + 7 :])
        elif block.startswith(b":"):
            comments += 1
    return {
        "lines": lines,
        "first_number": first,
        "last_number": last,
        "contiguous": contiguous,
        "digest": digest.hexdigest(),
        "events": events,
        "comments": comments,
        "done_status": done["status"] if done else None,
        "done_line_count": done["line_count"] if done else None,
    }


def summary(values: array) -> dict[str, float | int | None]:
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "p50": percentile(ordered, 50),
        "p99": percentile(ordered, 99),
        "max": ordered[-1] if ordered else None,
        "min": ordered[0] if ordered else None,
    }


def percentile(ordered: list[float], pct: float) -> float | None:
    """Nearest-rank percentile of sorted values."""
    if not ordered:
        return None
    rank = max(1, -(-len(ordered) * pct // 100))
    return ordered[int(rank) - 1]


def main() -> None:
    spec_path, out_path = sys.argv[1], sys.argv[2]
    with open(spec_path) as spec_file:
        spec = json.load(spec_file)
    result = run(spec)
    with open(out_path, "w") as out:
        json.dump(result, out)


if __name__ == "__main__":
    main()
