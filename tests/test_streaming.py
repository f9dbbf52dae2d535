"""Live streaming over real HTTP: real servers started by the test (gunicorn with the
project's config, runserver, waitress, nginx in front of gunicorn), read incrementally by a
raw-socket client (tests/sse_client.py) that stamps each byte with its arrival.

What is proved here is what a user of the stream relies on: lines arrive while the run is
still running (nothing in the chain buffers them), every line comes exactly once in order
whatever the reconnects (the resume contract, docs/architecture.md), a stream ends when its run
ends, an idle stream is kept alive, and a client that leaves frees its server thread.

A run launched with jobs.launcher.launch() runs in this test process, so for the server it
is a run of another process (its viewers follow it through the poller); a run launched
through the admin's launch form runs inside the server (its viewers follow it through the
hub, or through the poller when they reach the other gunicorn worker).
"""

from __future__ import annotations

import random
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

import pytest

from jobs import job, sleep
from jobs.models import Job, JobStatus
from tests.conftest import (
    ACCESS_LOG_FORMAT,
    PERMALINK,
    PROJECT_DIR,
    RESUME_MODES,
    WAIT,
    LiveServer,
    LocalRuns,
    csrf_of,
    events_url,
    get_log,
    launch_in_server,
    log_texts,
    open_events,
    resume_events,
    start_gunicorn,
    stop_server,
    stored_lines,
    wait_finished,
    wait_for,
)
from tests.sse_client import HttpStream, Line, SseEvent, SseParser, line_of, request, sse_events, text_lines

pytestmark = pytest.mark.django_db(transaction=True)

# --- Helpers ------------------------------------------------------------------------------------


def is_running(job: Job) -> bool:
    return Job.objects.get(pk=job.pk).status == JobStatus.RUNNING


def assert_streaming_headers(stream: HttpStream, content_type: str) -> None:
    assert stream.status == 200, stream.read_all()[:500]
    assert stream.headers["content-type"] == content_type
    assert stream.headers.get("cache-control") == "no-cache"
    assert stream.headers.get("x-accel-buffering") == "no"
    assert stream.headers.get("x-content-type-options") == "nosniff"
    assert "content-length" not in stream.headers


@dataclass
class StreamRead:
    """What one events connection received."""

    head: list[SseEvent] = field(default_factory=list)  # retry and the first status
    lines: list[Line] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)  # wall time of each line's arrival
    others: list[SseEvent] = field(default_factory=list)  # status, progress, comments
    done: SseEvent | None = None
    running_at_first_line: bool | None = None
    closed_after_done: bool = False  # the response ended there (and the connection, unless kept alive)


def read_events(stream: HttpStream, job: Job, after_head: Callable[[], None] | None = None) -> StreamRead:
    """Read an events stream to its end, checking its framing on the way; `after_head` is
    called once the first status event has come."""
    read = StreamRead()
    events = sse_events(stream)
    first = next(events)
    assert first.retry == 2000 and first.fields == [("retry", "2000")], first
    status = next(events)
    assert status.event == "status", status
    assert status.json["id"] == str(job.id)
    read.head = [first, status]
    if after_head is not None:
        after_head()
    for event in events:
        assert read.done is None, f"an event after done: {event}"
        if event.event == "message":
            if read.running_at_first_line is None:
                read.running_at_first_line = is_running(job)
            read.lines.append(line_of(event))
            read.arrivals.append(event.wall)
        elif event.event == "done":
            read.done = event
        else:
            assert event.event in ("status", "progress", ":"), event
            read.others.append(event)
    # A browser's keep-alive connection outlives the response: then its last chunk is the end.
    read.closed_after_done = stream.body_ended() if stream.keep_alive else stream.at_eof()
    return read


# --- 1. Lines arrive before the run ends -----------------------------------------------------------


@pytest.fixture
def server(live_server_gunicorn: LiveServer) -> LiveServer:
    return live_server_gunicorn


@pytest.mark.parametrize("where", ["other_process", "in_server"])
def test_events_stream_lines_as_they_are_printed(
    server: LiveServer, session_cookie: str, local_runs: LocalRuns, where: str
) -> None:
    if where == "in_server":
        job = launch_in_server(server.url, session_cookie, "demo.count", n=20, interval=0.1)
    else:
        job = local_runs.create("demo.count", n=20, interval=0.1)

    # Browsers keep connections alive: the response must end all the same (its last chunk).
    with open_events(server, job, session_cookie, keep_alive=where == "in_server") as stream:
        assert_streaming_headers(stream, "text/event-stream; charset=utf-8")
        # A run of this process starts once the viewer has its first status.
        held = job in local_runs.held
        read = read_events(stream, job, (lambda: local_runs.start(job)) if held else None)

    job.refresh_from_db()
    assert read.running_at_first_line, "the first line came only once the run had ended"
    assert read.lines == stored_lines(job)
    assert [line[3] for line in read.lines] == [f"Task #{i}" for i in range(20)] + ["Done"]
    assert read.done is not None and read.closed_after_done
    assert read.done.json["status"] == "succeeded"
    assert read.done.json["line_count"] == job.line_count == 21
    if where == "other_process":  # connected while it was queued: its start is sent
        assert read.head[1].json["status"] == "queued"
        statuses = [e.json["status"] for e in read.others if e.event == "status"]
        assert statuses[0] == "running" and set(statuses) <= {"running", "succeeded"}, statuses
    progress = [event.json for event in read.others if event.event == "progress"]
    assert progress and all(p["total"] == 20 for p in progress), progress
    spread = read.arrivals[-1] - read.arrivals[0]
    print(f"{where}: 21 lines arrived over {spread:.2f} s; {len(progress)} progress events")


# --- 2. log.txt ---------------------------------------------------------------------------------------


#: Set by test_log_txt_follows_and_pages to let its run go on past its first lines.
_go_on = threading.Event()


@job("streaming_tests.paused_count")
def paused_count() -> None:
    """demo.count that stops after 3 lines until the test lets it go on."""
    for index in range(30):
        if index == 3:
            _go_on.wait(WAIT)
        print(f"Task #{index}")
        sleep(0.02)
    print("Done")


def test_log_txt_follows_and_pages(server: LiveServer, session_cookie: str, local_runs: LocalRuns) -> None:
    _go_on.clear()
    job = local_runs.launch("streaming_tests.paused_count")
    wait_for(lambda: Job.objects.get(pk=job.pk).line_count >= 3, "the run's first lines")

    # Without follow, a running run's stored lines so far, and the response ends (the run
    # is paused: a response that waited for it would never end).
    status, body = get_log(server, job, session_cookie)
    assert status == 200
    assert body == "Task #0\nTask #1\nTask #2\n"

    # With follow (from the middle), the rest as it comes, ending when the run ends.
    url = f"{server.url}/jobs/{job.id}/log.txt?offset=2&follow=1"
    with HttpStream(url, headers={"Cookie": session_cookie}, timeout=WAIT) as stream:
        assert_streaming_headers(stream, "text/plain; charset=utf-8")
        followed, running_at_first = [], None
        for line in text_lines(stream):
            if running_at_first is None:
                running_at_first = is_running(job)
                _go_on.set()
            followed.append(line.text)
        assert stream.at_eof()
    assert Job.objects.get(pk=job.pk).is_finished, "the followed log ended before the run"
    assert running_at_first, "the first followed line came only once the run had ended"
    texts = log_texts(job)
    assert followed == texts[2:]
    assert len(texts) == 31

    # A finished run, at different offsets (follow changes nothing then).
    for query, expected in [
        ({}, texts),
        ({"offset": 0}, texts),
        ({"offset": 10}, texts[10:]),
        ({"offset": 31}, []),
        ({"offset": 500}, []),
        ({"offset": 10, "follow": 1}, texts[10:]),
        ({"offset": 31, "follow": 1}, []),
    ]:
        status, body = get_log(server, job, session_cookie, **query)
        assert status == 200, (query, body)
        assert body == "".join(text + "\n" for text in expected), query

    for bad in ("-1", "x", "1.5"):
        status, body = get_log(server, job, session_cookie, offset=bad)
        assert status == 400 and "offset" in body


# --- 3. Exactly once, whatever the reconnects ---------------------------------------------------------

DISCONNECT_KINDS = ("headers", "replay", "handover", "live", "bytes")


def _lines_accumulate(job: Job, beyond: int) -> None:
    """Wait until the run has stored lines past `beyond` (or has ended), so that the next
    connection has stored lines to replay."""

    def accumulated() -> bool:
        current = Job.objects.get(pk=job.pk)
        return current.line_count > beyond or current.is_finished

    wait_for(accumulated, f"line {beyond + 1} of {job}")


def _watch_with_disconnects(
    server_url: str, job: Job, cookie: str, rng: random.Random, disconnects: int, end_run: Callable[[], None]
) -> tuple[list[Line], list[str]]:
    """Read the run's events over many connections, leaving each at a chosen point and
    resuming from the last line received; once it has left `disconnects` times, it ends the
    run and reads to its end. Returns the lines and a log of the connections.

    Kinds of leaving: right after the response head ("headers"); inside the replay of
    stored lines ("replay": before the line count the connection's first status gave);
    at the hand-over from stored to live lines ("handover": within one line of that count);
    in the live tail ("live": past it); or at a random byte, mostly mid-event ("bytes":
    the partial event is dropped, as EventSource drops it)."""
    received: list[Line] = []
    log: list[str] = []
    left = 0
    while True:
        last = received[-1][0] if received else 0
        mode = rng.choice(RESUME_MODES)
        with resume_events(server_url, job, cookie, mode, last) as stream:
            if stream.status == 204:
                log.append(f"{mode} after {last}: 204")
                return received, log
            assert stream.status == 200, stream.read_all()[:500]
            kind = rng.choice(DISCONNECT_KINDS) if left < disconnects else "none"
            if kind == "none":
                end_run()
            if kind == "headers":
                left += 1
                log.append(f"{mode} after {last}: left after the head")
                stream.close(reset=rng.random() < 0.5)
                _lines_accumulate(job, last + rng.randint(0, 200))
                continue
            parser = SseParser()
            budget = rng.randint(1, 20_000) if kind == "bytes" else None
            stop_at: int | None = None
            stored_at_start: int | None = None
            done = leave = False
            for piece in stream.pieces():
                data = piece.data
                if budget is not None:
                    data, budget = data[:budget], budget - len(data)
                    leave = budget <= 0  # what came past the budget is never looked at
                for event in parser.feed(data):
                    if event.event == "status" and stored_at_start is None:
                        stored_at_start = event.json["line_count"]
                        stop_at = _stop_point(kind, last, stored_at_start, event.json["finished"], rng)
                    elif event.event == "message":
                        line = line_of(event)
                        expected = (received[-1][0] if received else 0) + 1
                        assert line[0] == expected, (
                            f"line {line[0]} where {expected} was due (connection {len(log) + 1}: "
                            f"{mode} after {last}, leaving at {kind} {stop_at})"
                        )
                        received.append(line)
                        if stop_at is not None and line[0] >= stop_at:
                            leave = True
                            break  # the rest of this piece is never looked at
                    elif event.event == "done":
                        done = True
                if leave or done:
                    break
            got = (received[-1][0] if received else 0) - last
            assert leave or done, f"the stream ended without done (connection {len(log) + 1}: {mode} after {last})"
            if done:
                assert stream.at_eof(), "the server kept the connection open after done"
                log.append(f"{mode} after {last}: {got} lines, done (stored at start {stored_at_start})")
                return received, log
            left += 1
            log.append(
                f"{mode} after {last}: left at {kind} after {got} lines (stored at start {stored_at_start}"
                f"{', mid-event' if parser.partial else ''})"
            )
            stream.close(reset=rng.random() < 0.5)
        _lines_accumulate(job, last + got + rng.randint(0, 150))


def _stop_point(kind: str, last: int, stored: int, finished: bool, rng: random.Random) -> int | None:
    """The line number after which to leave, given the stored line count at the start."""
    if kind == "none":  # the disconnects are done: read to the end
        return None
    if finished:  # every line is stored: all of this connection is replay; leave before done
        return rng.randint(last + 1, stored)
    if kind == "replay" and stored - last > 1:
        return rng.randint(last + 1, stored - 1)
    if kind in ("replay", "handover"):
        return max(last + 1, stored + rng.choice((-1, 0, 1)))
    if kind == "live":
        return max(last + 1, stored) + rng.randint(2, 150)
    return None


@pytest.fixture
def server_with_pids(subprocess_env: dict[str, str], tmp_path: Path) -> Iterator[LiveServer]:
    """gunicorn with the project's config (2 workers), logging each request's worker."""
    server = start_gunicorn(subprocess_env, tmp_path / "gunicorn.log", "--access-logformat", ACCESS_LOG_FORMAT)
    yield server
    stop_server(server)


@pytest.mark.slow
@pytest.mark.parametrize("where", ["other_process", "in_server"])
def test_resuming_at_random_points_gets_every_line_exactly_once(
    server_with_pids: LiveServer, session_cookie: str, local_runs: LocalRuns, where: str, tmp_path: Path
) -> None:
    server = server_with_pids
    # About 1,000 lines a second until the 20 reconnects have met it while it runs.
    stop_file = tmp_path / "stop"
    params = {"stop_file": str(stop_file), "interval": 0.001}
    if where == "in_server":
        job = launch_in_server(server.url, session_cookie, "tests.count_until", **params)
    else:
        job = local_runs.launch("tests.count_until", **params)
    rng = random.Random(f"streaming-{where}")

    received, log = _watch_with_disconnects(server.url, job, session_cookie, rng, 20, stop_file.touch)

    job.refresh_from_db()
    print("\n".join(log))
    assert job.status == JobStatus.SUCCEEDED
    assert [line[0] for line in received] == list(range(1, job.line_count + 1))
    assert received == stored_lines(job)
    assert sum(" left " in entry for entry in log) == 20
    # The client then has every line: a reconnect is told to stop.
    with open_events(server, job, session_cookie, last_event_id=job.line_count) as stream:
        assert stream.status == 204
    # Which worker served the connections (both, mostly: the kernel picks). With the run
    # inside the server, one of them follows it through its hub, the other through its poller.
    pids = re.findall(rf'pid=<?(\d+)>? "GET /jobs/{job.id}/events', server.log())
    print(f"connections per worker: { {pid: pids.count(pid) for pid in set(pids)} }")


# --- 4. A run of another process, followed through the poller ------------------------------------------


def test_cross_process_tail_of_runjob(server: LiveServer, session_cookie: str, subprocess_env: dict[str, str]) -> None:
    process = subprocess.Popen(
        [sys.executable, "manage.py", "runjob", "demo.count", "n=30", "interval=0.1"],
        cwd=PROJECT_DIR, env=subprocess_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    stderr: list[str] = []
    drain = threading.Thread(target=lambda: stderr.extend(process.stderr or []), daemon=True)
    drain.start()
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        match = PERMALINK.fullmatch(first.strip())
        assert match, f"not a permalink: {first!r}; stderr: {stderr}"
        job = Job.objects.get(pk=uuid.UUID(match["id"]))
        # runjob echoes its lines: read them so that its pipe never fills.
        echoed: list[str] = []
        echo = threading.Thread(target=lambda: echoed.extend(process.stdout or []), daemon=True)
        echo.start()

        with open_events(server, job, session_cookie) as stream:
            assert_streaming_headers(stream, "text/event-stream; charset=utf-8")
            events = sse_events(stream)
            lines: list[tuple[Line, float]] = []
            runjob_running_at_first_line = None
            done = None
            for event in events:
                if event.event == "message":
                    if runjob_running_at_first_line is None:
                        runjob_running_at_first_line = process.poll() is None
                    lines.append((line_of(event), event.wall))
                elif event.event == "done":
                    done = event
            assert stream.at_eof()
        assert process.wait(timeout=WAIT) == 0, stderr
        echo.join(WAIT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    job.refresh_from_db()
    assert runjob_running_at_first_line, "the first line came only once runjob had exited"
    assert done is not None and done.json["status"] == "succeeded"
    assert [line for line, _ in lines] == stored_lines(job)
    assert [text.rstrip("\n") for text in echoed] == [line[3] for line, _ in lines]
    from datetime import datetime

    delays = sorted(arrival - datetime.fromisoformat(line[2]).timestamp() for line, arrival in lines)
    print(
        f"cross-process delay, line stored -> received: min {delays[0] * 1000:.0f} ms, "
        f"median {delays[len(delays) // 2] * 1000:.0f} ms, max {delays[-1] * 1000:.0f} ms"
    )


# --- 5. Reconnecting to a finished run --------------------------------------------------------------------


def test_reconnect_to_a_finished_run(server: LiveServer, session_cookie: str, local_runs: LocalRuns) -> None:
    # Text that must survive JSON, UTF-8 and the event framing unchanged.
    text = 'héllo ✓ 🎉 <b>&amp; "quoted" \\ \u2028 data: id: 7'
    job = wait_finished(local_runs.launch("demo.echo", text=text, times=5))
    assert job.line_count == 5
    everything = stored_lines(job)
    assert [line[3] for line in everything] == [text] * 5

    # The client has every line (or says it has more): 204, no body; EventSource stops.
    for headers, query in [
        ({"last_event_id": 5}, {}),
        ({"last_event_id": 6}, {}),
        ({"last_event_id": 99999999999999}, {}),
        ({"last_event_id": 5}, {"offset": 0}),  # the header wins
        ({}, {"offset": 5}),
    ]:
        with open_events(server, job, session_cookie, **headers, **query) as stream:
            assert stream.status == 204, (headers, query)
            assert stream.read_all() == b""

    # An earlier point: the rest, then done, then the server closes.
    for headers, query, expected in [
        ({"last_event_id": 2}, {}, everything[2:]),
        ({"last_event_id": 4}, {"offset": 5}, everything[4:]),  # the header wins
        ({}, {"offset": 0}, everything),
        ({"last_event_id": 0}, {}, everything),
    ]:
        with open_events(server, job, session_cookie, **headers, **query) as stream:
            assert_streaming_headers(stream, "text/event-stream; charset=utf-8")
            read = read_events(stream, job)
        assert read.lines == expected, (headers, query)
        assert read.done is not None and read.done.json["status"] == "succeeded"
        assert read.closed_after_done

    # A Last-Event-ID that is not a line number is bad input.
    status, _, body = request(
        events_url(server, job), headers={"Cookie": session_cookie, "Last-Event-ID": "abc"}, timeout=WAIT
    )
    assert status == 400, body


def test_resume_point_ahead_of_the_stored_lines(server: LiveServer, session_cookie: str, local_runs: LocalRuns) -> None:
    """A Last-Event-ID past the lines stored so far (a client that had them from another
    worker, whose lines this one has not seen yet): nothing missing, nothing repeated."""
    job = local_runs.create("demo.count", n=20, interval=0.05)
    with open_events(server, job, session_cookie, last_event_id=10) as stream:
        read = read_events(stream, job, lambda: local_runs.start(job))
    assert read.head[1].json["line_count"] == 0
    assert read.lines == stored_lines(job)[10:]
    assert read.done is not None and read.done.json["line_count"] == 21
    assert read.closed_after_done


def test_cancel_over_http_ends_the_stream(server: LiveServer, session_cookie: str) -> None:
    """The job page's cancel (fetch() with the CSRF header) stops a run of the server; its
    viewer gets the run's last lines and `done` with the cancelled status."""
    job = launch_in_server(server.url, session_cookie, "demo.count", n=10_000, interval=0.05)
    with open_events(server, job, session_cookie) as stream:
        events = sse_events(stream)
        seen: list[SseEvent] = []
        for event in events:
            seen.append(event)
            if event.event == "message":
                break  # it runs: cancel it as the job page does
        token, cookies = csrf_of(f"{server.url}/jobs/{job.id}/", session_cookie)
        status, _, body = request(
            f"{server.url}/jobs/{job.id}/cancel",
            method="POST",
            body=b"",
            headers={"Cookie": cookies, "X-CSRFToken": token, "Accept": "application/json"},
            timeout=WAIT,
        )
        assert status == 202, body[:500]
        seen += list(events)
        assert stream.at_eof()
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED
    assert seen[-1].event == "done" and seen[-1].json["status"] == "cancelled"
    assert [line_of(event) for event in seen if event.event == "message"] == stored_lines(job)
    assert stored_lines(job)[-1][3] == "Cancelled by staff."


# --- 6. Heartbeats ------------------------------------------------------------------------------------------


def test_idle_stream_gets_heartbeats(
    subprocess_env: dict[str, str], tmp_path: Path, session_cookie: str, local_runs: LocalRuns
) -> None:
    server = start_gunicorn({**subprocess_env, "RUNLOG_STREAM_HEARTBEAT": "1"}, tmp_path / "gunicorn.log")
    try:
        job = local_runs.create("demo.count", n=3, interval=3)
        with open_events(server, job, session_cookie) as stream:
            local_runs.start(job)  # connected first: the 3 s after Task #0 are all idle
            seen: list[SseEvent] = []
            lines = 0
            for event in sse_events(stream):
                seen.append(event)
                lines += event.event == "message"
                if lines == 2:  # one idle gap of 3 s, between Task #0 and Task #1
                    break
    finally:
        stop_server(server)
    kinds = [event.event for event in seen]
    first, second = kinds.index("message"), len(kinds) - 1
    heartbeats = [event for event in seen[first:second] if event.is_comment]
    gaps = [f"{b.monotonic - a.monotonic:.2f}" for a, b in pairwise(seen[first : second + 1])]
    print(f"{len(heartbeats)} heartbeats in a 3 s gap; gaps between events: {gaps}")
    assert heartbeats, f"no ':' comment while the stream was idle for 3 s: {kinds}"
    assert all(event.data == "keep-alive" for event in heartbeats)


# --- 7. A client that leaves frees its thread ------------------------------------------------------------


def test_a_client_that_leaves_frees_its_thread(
    subprocess_env: dict[str, str], tmp_path: Path, session_cookie: str, local_runs: LocalRuns
) -> None:
    # Heartbeats far apart, so that only noticing the closed socket can free the threads:
    # a heartbeat (or a line) written to a closed socket would free them too, but only after
    # WAIT, and the run stays silent (it prints once, then sleeps past the test; cancelled after).
    # Threaded workers, where a stream holds a thread (uvicorn's hold none: there the place
    # a client frees is its stream's, tests/test_capacity.py), with no stream limit below them.
    env = {**subprocess_env, "RUNLOG_STREAM_HEARTBEAT": str(WAIT * 10), "GUNICORN_WORKER_CLASS": "gthread",
           "RUNLOG_MAX_STREAMS": "2"}  # fmt: skip
    server = start_gunicorn(env, tmp_path / "gunicorn.log", "--workers", "1", "--threads", "2")
    try:
        job = local_runs.launch("demo.count", n=2, interval=WAIT * 10)
        # Its first line and its progress stored: nothing more is published to the streams.
        wait_for(lambda: Job.objects.get(pk=job.pk).progress_done == 1, "the run's first line and progress")
        assert Job.objects.get(pk=job.pk).line_count == 1
        streams = [open_events(server, job, session_cookie) for _ in range(2)]
        for stream in streams:  # both threads of the worker now serve an idle stream
            events = sse_events(stream)
            assert next(events).retry == 2000
            assert next(events).event == "status"
        status_url = f"{server.url}/jobs/{job.id}/status"
        waiting = HttpStream(status_url, headers={"Cookie": session_cookie}, timeout=WAIT, defer_head=True)
        # A precondition, not a timing: with both threads taken, the request waits.
        assert not waiting.answered(timeout=0.5), "a third request was served beside two streams"

        streams[0].close()  # FIN, as a closed browser tab
        streams[1].close(reset=True)  # RST, as a client whose machine went away
        started = time.monotonic()
        with waiting:
            waiting.read_head()  # fails after WAIT if no thread is freed
            body = waiting.read_all()
        print(f"/status answered {time.monotonic() - started:.2f} s after both streams were closed")
        assert waiting.status == 200, body
        assert b'"status":"running"' in body
    finally:
        stop_server(server)
    assert "Traceback" not in server.log(), server.log()


# --- 8. No buffering in other servers, nor behind nginx ------------------------------------------------------


def test_other_servers_do_not_buffer_the_stream(
    other_server: tuple[str, Callable[[], str]], session_cookie: str, local_runs: LocalRuns
) -> None:
    base, server_log = other_server
    job = local_runs.create("demo.count", n=20, interval=0.1)
    with open_events(base, job, session_cookie) as stream:
        assert stream.status == 200, stream.read_all()[:500]
        assert stream.headers["content-type"] == "text/event-stream; charset=utf-8"
        # The viewer is there first: every line is a live one.
        read = read_events(stream, job, lambda: local_runs.start(job))
    job.refresh_from_db()
    batches = len(set(read.arrivals))
    spread = read.arrivals[-1] - read.arrivals[0] if read.arrivals else 0.0
    print(f"{base}: {stream.headers.get('server')}: 21 lines in {batches} reads over {spread:.2f} s")
    assert read.running_at_first_line, f"the first line came only once the run had ended\n{server_log()[-3000:]}"
    # Over ~2 s of printing: a server that held the body back would deliver it in one go.
    assert batches >= 3, f"the lines came in {batches} reads: buffered"
    assert read.lines == stored_lines(job)
    assert read.done is not None and read.done.json["status"] == "succeeded"
    assert read.closed_after_done

    # log.txt?follow=1 too. Its head may only come with its first line (a status change is
    # no text), so the run is started before the head is awaited.
    job = local_runs.create("demo.count", n=10, interval=0.1)
    url = f"{base}/jobs/{job.id}/log.txt?follow=1"
    with HttpStream(url, headers={"Cookie": session_cookie}, timeout=WAIT, defer_head=True) as stream:
        local_runs.start(job)
        stream.read_head()
        assert stream.status == 200
        followed, arrivals, running_at_first = [], [], None
        for line in text_lines(stream):
            if running_at_first is None:
                running_at_first = is_running(job)
            followed.append(line.text)
            arrivals.append(line.wall)
    print(f"log.txt?follow=1: 11 lines in {len(set(arrivals))} reads")
    assert running_at_first, "log.txt?follow=1: the first line came only once the run had ended"
    assert len(set(arrivals)) >= 3, "log.txt?follow=1 came in one go: buffered"
    assert followed == log_texts(job)


# --- 9. A crowd of viewers stays within the database's connections -----------------------------------

CROWD = 40
SLOTS = 4
#: The server's page threads, which read each viewer's session and run (and keep a connection each).
PAGE_THREADS = 4
#: Connections of an idle server's own threads: its supervisor, and its poller (the run is
#: one of this test process). Its listener's one connection (jobs.streaming.listener, in
#: LISTEN) does not depend on the viewers and is not counted.
SERVER_THREADS = 2


def test_a_crowd_of_viewers_opens_no_more_connections_than_its_slots(
    subprocess_env: dict[str, str], tmp_path: Path, session_cookie: str, local_runs: LocalRuns
) -> None:
    """40 viewers connecting at once to a process with 4 page threads and 4 viewer slots:
    each waits its turn for a page thread (to read its session and the run) and for a slot
    (for its stream's reads) instead of opening a connection each, which with hundreds of
    viewers exhausted PostgreSQL's connections ("too many clients"), and every viewer gets
    every line."""
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("counted in pg_stat_activity (the same code bounds SQLite's connections)")
    name = f"runlog-crowd-{uuid.uuid4().hex[:8]}"  # marks this server's connections
    env = {**subprocess_env, "DATABASE_URL": f"{subprocess_env['DATABASE_URL']}?application_name={name}",
           "RUNLOG_VIEWER_DATABASE_SLOTS": str(SLOTS), "RUNLOG_PAGE_THREADS": str(PAGE_THREADS)}  # fmt: skip
    server = start_gunicorn(env, tmp_path / "gunicorn.log", "--workers", "1")
    peak = 0
    sampling = threading.Event()

    def sample_connections() -> None:
        nonlocal peak
        with connection.cursor() as cursor:
            while not sampling.is_set():
                cursor.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND query NOT LIKE 'LISTEN %%'",
                    [name],
                )
                peak = max(peak, cursor.fetchone()[0])
                time.sleep(0.01)
        connection.close()

    job = local_runs.create("demo.count", n=20, interval=0.05)
    reads: list[list[SseEvent] | BaseException] = []

    def view() -> None:
        try:
            with open_events(server, job, session_cookie) as stream:
                reads.append(list(sse_events(stream)))
        except BaseException as exc:  # reported below, with the others
            reads.append(exc)

    sampler = threading.Thread(target=sample_connections)
    viewers = [threading.Thread(target=view) for _ in range(CROWD)]
    try:
        sampler.start()
        for viewer in viewers:
            viewer.start()
        wait_for(lambda: Job.objects.get(pk=job.pk).status == JobStatus.QUEUED and peak > 0, "the crowd to connect")
        local_runs.start(job)
        for viewer in viewers:
            viewer.join(WAIT * 2)
    finally:
        sampling.set()
        sampler.join(WAIT)
        stop_server(server)
    failures = [read for read in reads if isinstance(read, BaseException)]
    assert not failures, failures[:3]
    assert len(reads) == CROWD
    lines = stored_lines(job)
    for read in reads:
        assert [line_of(event) for event in read if event.event == "message"] == lines  # type: ignore[union-attr]
        assert read[-1].event == "done"  # type: ignore[index]
    print(f"{CROWD} viewers, at most {peak} connections")
    assert 0 < peak <= PAGE_THREADS + SLOTS + SERVER_THREADS
    assert "too many clients" not in server.log() and "Traceback" not in server.log(), server.log()
