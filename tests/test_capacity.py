"""Viewer capacity: live streams past a process's RUNLOG_MAX_STREAMS are refused with 503 and
Retry-After, the streams ended give their places back, and pages answer whatever the
streams."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from django.test import Client, override_settings
from django.utils import timezone
from httpx_sse import connect_sse

from jobs.models import Job, JobStatus
from jobs.streaming import capacity
from tests.conftest import (
    WAIT,
    LiveServer,
    events_url,
    launch_in_server,
    open_events,
    running_run,
    start_gunicorn,
    stop_server,
    store_lines,
)
from tests.sse_client import HttpStream, request, sse_events

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_stream_past_the_limit_gets_503_with_retry_after_until_a_place_is_free(admin_client: Client) -> None:
    # Room for one more stream than this process has open (responses that other tests left
    # unclosed keep their places).
    with override_settings(RUNLOG_MAX_STREAMS=capacity.open_streams() + 1, RUNLOG_STREAM_RETRY_AFTER=7):
        refused_while_full(admin_client)


def refused_while_full(admin_client: Client) -> None:
    job = running_run()
    first = admin_client.get(f"/jobs/{job.id}/events")
    assert first.status_code == 200
    for url in (f"/jobs/{job.id}/events", f"/jobs/{job.id}/log.txt?follow=1"):
        refused = admin_client.get(url)
        assert refused.status_code == 503
        assert refused["Retry-After"] == "7"
    # What is not a live stream is served as ever.
    assert admin_client.get(f"/jobs/{job.id}/log.txt").status_code == 200
    assert admin_client.get(f"/jobs/{job.id}/status").status_code == 200
    first.close()  # the client left: its place is free again
    again = admin_client.get(f"/jobs/{job.id}/log.txt?follow=1")
    assert again.status_code == 200
    again.close()


# --- Real servers -----------------------------------------------------------------------------

#: Pages a viewer or an operator loads while others watch runs: none is a live stream.
PAGES = ("/admin/", "/jobs/", "/jobs/{}/", "/jobs/{}/status", "/jobs/{}/lines", "/jobs/{}/log.txt")


@pytest.fixture(params=["uvicorn", "gthread"])
def small_server(
    request: pytest.FixtureRequest, subprocess_env: dict[str, str], tmp_path: Path
) -> Iterator[LiveServer]:
    """One worker of the default server (uvicorn) or of threads (gthread, 4 threads: its
    stream limit is then 3), serving at most 3 streams, each refused one told to retry in 1 s."""
    env = {**subprocess_env, "GUNICORN_WORKER_CLASS": request.param, "RUNLOG_STREAM_RETRY_AFTER": "1"}
    if request.param == "gthread":
        env["GUNICORN_THREADS"] = "4"
    else:
        env["RUNLOG_MAX_STREAMS"] = "3"
    server = start_gunicorn(env, tmp_path / "gunicorn.log", "--workers", "1")
    yield server
    stop_server(server)


def test_pages_answer_while_streams_exceed_the_limit_and_the_streams_past_it_get_503(
    small_server: LiveServer, session_cookie: str
) -> None:
    run = launch_in_server(small_server.url, session_cookie, "demo.count", n="100000", interval="0.2")
    streams = [open_events(small_server, run, session_cookie) for _ in range(3)]
    try:
        assert [stream.status for stream in streams] == [200, 200, 200]
        for url in (events_url(small_server, run), f"{small_server.url}/jobs/{run.id}/log.txt?follow=1"):
            status, headers, _ = request(url, headers={"Cookie": session_cookie}, timeout=WAIT)
            assert (status, headers["retry-after"]) == (503, "1")
        for page in PAGES:
            status, _, body = request(small_server.url + page.format(run.id), headers={"Cookie": session_cookie})
            assert status == 200, (page, body[:300])
        # The streams held meanwhile still follow the run.
        for stream in streams:
            assert any(event.event == "message" for event in sse_events(stream))
    finally:
        for stream in streams:
            stream.close()


def connect_honouring_retry_after(url: str, cookie: str, refused: threading.Event) -> HttpStream:
    """What a well-behaved client does with a 503: wait Retry-After seconds and try again."""
    while True:
        stream = HttpStream(url, headers={"Cookie": cookie}, timeout=WAIT)
        if stream.status != 503:
            return stream
        refused.set()
        stream.close()
        time.sleep(int(stream.headers["retry-after"]))


def test_a_client_that_honours_retry_after_connects_once_a_stream_has_ended(
    small_server: LiveServer, session_cookie: str
) -> None:
    run = launch_in_server(small_server.url, session_cookie, "demo.count", n="100000", interval="0.2")
    streams = [open_events(small_server, run, session_cookie) for _ in range(3)]
    refused = threading.Event()
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(connect_honouring_retry_after, events_url(small_server, run), session_cookie, refused)
        try:
            assert refused.wait(WAIT)
            streams.pop().close()  # a viewer leaves
            late = waiting.result(WAIT)
            assert late.status == 200
            assert any(event.event == "message" for event in sse_events(late))
            late.close()
        finally:
            for stream in streams:
                stream.close()


def test_reconnecting_to_a_finished_run_with_httpx_sse_ends_without_an_error(
    live_server_gunicorn: LiveServer, session_cookie: str
) -> None:
    run = Job.objects.create(name="demo.echo", params={}, status=JobStatus.SUCCEEDED, started_at=timezone.now())
    store_lines(run, 1, 3)
    Job.objects.filter(pk=run.pk).update(line_count=3, finished_at=timezone.now())
    url = events_url(live_server_gunicorn, run)
    with httpx.Client(headers={"Cookie": session_cookie}, timeout=WAIT) as client:
        with connect_sse(client, "GET", url) as source:
            events = [(event.event, event.id) for event in source.iter_sse() if event.data]
        assert events[-1][0] == "done"
        assert [number for kind, number in events if kind == "message"] == ["1", "2", "3"]
        # The reconnect that has every line: 204, no body, and no event to parse.
        with connect_sse(client, "GET", url, headers={"Last-Event-ID": "3"}) as source:
            assert source.response.status_code == 204
            assert source.response.headers["content-type"].startswith("text/event-stream")
            assert list(source.iter_sse()) == []
            assert source.response.num_bytes_downloaded == 0
