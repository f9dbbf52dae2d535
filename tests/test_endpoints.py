"""The log endpoints through Django's test client (WSGI and ASGI): every status code and
header, bad input, permissions, and the follow algorithm's exactly-once contract."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from django.test import AsyncClient, Client, override_settings
from django.utils import timezone

from jobs.launcher import launch
from jobs.logstore.hub import hub
from jobs.logstore.notify import announce
from jobs.models import Job, JobStatus, LogLine
from jobs.streaming import formats
from jobs.streaming.follow import Done, Lines, Status, events
from tests.conftest import running_run, store_lines, wait_finished, wait_for
from tests.sse_client import SseParser

pytestmark = pytest.mark.django_db(transaction=True)

Events = list[tuple[str, str, str | None]]  # (event type, data, id)


def parse_sse(body: bytes) -> tuple[int | None, Events]:
    """The `retry:` value and the events (comments left out) of a complete SSE body."""
    retry = None
    parsed: Events = []
    for event in SseParser().feed(body):
        if event.retry is not None:
            retry = event.retry
        if event.data and not event.is_comment:
            parsed.append((event.event, event.data, event.id))
    return retry, parsed


def streamed(response: Any) -> bytes:
    return b"".join(response.streaming_content)


def numbers_and_texts(parsed: Events) -> list[tuple[int, str]]:
    lines = [json.loads(data) for kind, data, _ in parsed if kind == "message"]
    return [(line["n"], line["text"]) for line in lines]


def stored(job: Job) -> list[tuple[int, str]]:
    return list(LogLine.objects.filter(job=job).order_by("number").values_list("number", "text"))


def finished_run(lines: list[str], stream: str = "stdout", status: JobStatus = JobStatus.SUCCEEDED) -> Job:
    """A finished run with the given stored lines, written directly (no job thread)."""
    now = timezone.now()
    job = Job.objects.create(
        name="demo.echo", params={"text": "x"}, status=status, started_at=now, finished_at=now, line_count=len(lines)
    )
    LogLine.objects.bulk_create(
        LogLine(job=job, number=number, stream=stream, text=text, created_at=now)
        for number, text in enumerate(lines, start=1)
    )
    return job


@pytest.fixture
def client(staff_user: Any) -> Client:
    client = Client()
    client.force_login(staff_user)
    return client


# --- events -------------------------------------------------------------------------------------


def test_events_of_a_running_job_stream_every_line_then_done(client: Client) -> None:
    job = launch("demo.count", n=5, interval=0.05)
    response = client.get(f"/jobs/{job.id}/events")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream; charset=utf-8"
    assert response["Cache-Control"] == "no-cache"
    assert response["X-Accel-Buffering"] == "no"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert not response.has_header("Content-Length")
    body = streamed(response)
    assert body.startswith(b"retry: 2000\n\n")
    retry, parsed = parse_sse(body)
    assert retry == 2000
    assert parsed[0][0] == "status"
    assert parsed[-1][0] == "done"
    assert json.loads(parsed[-1][1])["status"] == "succeeded"
    job.refresh_from_db()
    assert numbers_and_texts(parsed) == stored(job)
    # Each line's id is its number, so that Last-Event-ID resumes after it.
    assert [int(event_id) for kind, _, event_id in parsed if kind == "message"] == list(range(1, 7))
    assert '"progress"' in body.decode()  # demo.count reports progress


def test_event_data_is_the_designed_json(client: Client) -> None:
    job = finished_run(["<script>alert(1)</script>", 'quote " and \\ backslash', "é ✓"])
    _, parsed = parse_sse(streamed(client.get(f"/jobs/{job.id}/events")))
    lines = [json.loads(data) for kind, data, _ in parsed if kind == "message"]
    assert [line["text"] for line in lines] == ["<script>alert(1)</script>", 'quote " and \\ backslash', "é ✓"]
    assert set(lines[0]) == {"n", "stream", "t", "text"}
    assert lines[0]["stream"] == "stdout"
    assert lines[0]["t"].startswith(str(timezone.now().year))


def test_last_event_id_wins_over_offset(client: Client) -> None:
    job = finished_run([f"line {n}" for n in range(1, 11)])
    response = client.get(f"/jobs/{job.id}/events?offset=2", HTTP_LAST_EVENT_ID="7")
    _, parsed = parse_sse(streamed(response))
    assert numbers_and_texts(parsed) == [(8, "line 8"), (9, "line 9"), (10, "line 10")]


@pytest.mark.parametrize("header", [{"HTTP_LAST_EVENT_ID": "3"}, {}])
def test_offset_and_last_event_id_resume_after_the_given_line(client: Client, header: dict[str, str]) -> None:
    job = finished_run([f"line {n}" for n in range(1, 6)])
    query = "" if header else "?offset=3"
    _, parsed = parse_sse(streamed(client.get(f"/jobs/{job.id}/events{query}", **header)))
    assert numbers_and_texts(parsed) == [(4, "line 4"), (5, "line 5")]
    assert parsed[-1][0] == "done"


@pytest.mark.parametrize("have", ["5", "6", "99999999999999999999"])
def test_a_finished_job_whose_lines_the_client_has_answers_204(client: Client, have: str) -> None:
    job = finished_run([f"line {n}" for n in range(1, 6)])
    assert client.get(f"/jobs/{job.id}/events", HTTP_LAST_EVENT_ID=have).status_code == 204
    assert client.get(f"/jobs/{job.id}/events?offset={have}").status_code == 204


def test_an_empty_finished_run_answers_204(client: Client) -> None:
    job = finished_run([], status=JobStatus.FAILED)
    response = client.get(f"/jobs/{job.id}/events")
    assert response.status_code == 204  # offset 0 already covers its 0 lines


@pytest.mark.parametrize(
    ("query", "header"),
    [
        ("?offset=-1", {}),
        ("?offset=abc", {}),
        ("?offset=1.5", {}),
        ("?offset=٣", {}),
        ("", {"HTTP_LAST_EVENT_ID": "x"}),
    ],
)
def test_bad_offsets_answer_400_with_a_message(client: Client, query: str, header: dict[str, str]) -> None:
    job = finished_run(["a"])
    for url in (f"/jobs/{job.id}/events{query}", f"/jobs/{job.id}/log.txt{query}", f"/jobs/{job.id}/lines{query}"):
        if header and "events" not in url:
            continue
        response = client.get(url, **header)
        assert response.status_code == 400, url
        assert b"must be a non-negative integer" in response.content


def test_unknown_and_malformed_ids_answer_404(client: Client) -> None:
    for endpoint in ("events", "log.txt", "lines", "status"):
        assert client.get(f"/jobs/{uuid.uuid4()}/{endpoint}").status_code == 404
        assert client.get(f"/jobs/not-a-uuid/{endpoint}").status_code == 404
    assert client.post(f"/jobs/{uuid.uuid4()}/cancel").status_code == 404


# --- events?batch=1 ------------------------------------------------------------------------------


def batched_lines(parsed: Events) -> list[tuple[int, list[dict[str, Any]]]]:
    """(id, line objects) of each `lines` event; and no line is sent as a one-line event."""
    assert not [kind for kind, _, _ in parsed if kind == "message"]
    return [(int(event_id or 0), json.loads(data)) for kind, data, event_id in parsed if kind == "lines"]


def test_batch_mode_sends_the_same_line_objects_in_events_of_at_most_1000_lines(client: Client) -> None:
    job = finished_run([f"line {n} <b>é</b>" for n in range(1, 2501)])
    _, one_per_line = parse_sse(streamed(client.get(f"/jobs/{job.id}/events")))
    response = client.get(f"/jobs/{job.id}/events?batch=1")
    assert response["Content-Type"] == "text/event-stream; charset=utf-8"
    body = streamed(response)
    assert body.startswith(b"retry: 2000\n\n")
    _, parsed = parse_sse(body)
    assert [kind for kind, _, _ in parsed] == ["status", "lines", "lines", "lines", "done"]
    batches = batched_lines(parsed)
    assert [(event_id, len(lines)) for event_id, lines in batches] == [(1000, 1000), (2000, 1000), (2500, 500)]
    assert [line for _, lines in batches for line in lines] == [
        json.loads(data) for kind, data, _ in one_per_line if kind == "message"
    ]
    assert [event for event in parsed if event[0] != "lines"] == [
        event for event in one_per_line if event[0] != "message"
    ]


def test_a_live_batch_of_more_than_1000_lines_is_split(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(formats, "BATCH_LINES", 3)
    rows = [(n, "stdout", timezone.now(), f"line {n}") for n in range(1, 8)]
    _, parsed = parse_sse(formats.sse_batched(Lines(rows)))
    assert [(event_id, [line["n"] for line in lines]) for event_id, lines in batched_lines(parsed)] == [
        (3, [1, 2, 3]),
        (6, [4, 5, 6]),
        (7, [7]),
    ]


@pytest.mark.parametrize(
    ("query", "header"), [("?batch=1", {"HTTP_LAST_EVENT_ID": "1000"}), ("?batch=1&offset=1000", {})]
)
def test_batch_mode_resumes_after_the_last_event_id_or_offset(
    client: Client, query: str, header: dict[str, str]
) -> None:
    job = finished_run([f"line {n}" for n in range(1, 2501)])
    _, parsed = parse_sse(streamed(client.get(f"/jobs/{job.id}/events{query}", **header)))
    batches = batched_lines(parsed)
    assert [event_id for event_id, _ in batches] == [2000, 2500]
    assert [line["n"] for _, lines in batches for line in lines] == list(range(1001, 2501))
    assert client.get(f"/jobs/{job.id}/events?batch=1", HTTP_LAST_EVENT_ID="2500").status_code == 204
    assert client.get(f"/jobs/{job.id}/events?batch=2").status_code == 400


def test_batch_mode_resumes_a_running_run_exactly_once(client: Client) -> None:
    """A viewer reads the replay and part of the live tail, goes away, lines are stored
    meanwhile, and it comes back with its last event id: every line once, in order."""
    job = running_run()
    store_lines(job, 1, 2500)
    received: list[int] = []

    def take(chunks: Iterator[bytes], until: int) -> str | None:
        """Read events until line `until`, or to the end; the last id received."""
        last_id = None
        for chunk in chunks:
            _, parsed = parse_sse(chunk)
            for event_id, lines in batched_lines(parsed):
                received.extend(line["n"] for line in lines)
                last_id = str(event_id)
            if received and received[-1] >= until or any(kind == "done" for kind, _, _ in parsed):
                break
        return last_id

    first = client.get(f"/jobs/{job.id}/events?batch=1")
    first_chunks = iter(first.streaming_content)
    take(first_chunks, 2500)  # the replay
    store_lines(job, 2501, 2800)
    last_id = take(first_chunks, 2800)  # live, through the poller
    first.close()  # the client goes away
    assert received == list(range(1, 2801)) and last_id == "2800"
    store_lines(job, 2801, 3000)  # stored while nobody watches

    second = client.get(f"/jobs/{job.id}/events?batch=1", HTTP_LAST_EVENT_ID=last_id)
    second_chunks = iter(second.streaming_content)
    try:
        take(second_chunks, 3000)
        store_lines(job, 3001, 4200)
        Job.objects.filter(pk=job.pk).update(status=JobStatus.SUCCEEDED, finished_at=timezone.now())
        announce(job.id, 4200)  # as a change of a run's status is
        take(second_chunks, 4200)
        take(second_chunks, 4201)  # to `done`
    finally:
        Job.objects.filter(pk=job.pk).update(status=JobStatus.SUCCEEDED)
        second.close()
    assert received == list(range(1, 4201))


# --- log.txt, lines, status ---------------------------------------------------------------------


def test_head_of_log_txt_and_status_answers_their_headers_without_a_body(client: Client) -> None:
    finished = finished_run(["first"])
    running = running_run()  # a HEAD of its followed log must not wait for its end
    for url, content_type in [
        (f"/jobs/{finished.id}/log.txt", "text/plain; charset=utf-8"),
        (f"/jobs/{running.id}/log.txt?follow=1", "text/plain; charset=utf-8"),
        (f"/jobs/{finished.id}/log.txt?download=1", "text/plain; charset=utf-8"),
        (f"/jobs/{finished.id}/status", "application/json"),
    ]:
        response = client.head(url)
        assert response.status_code == 200, url
        assert response["Content-Type"] == content_type
        assert b"".join(response.streaming_content if response.streaming else [response.content]) == b""
    assert client.head(f"/jobs/{finished.id}/log.txt?download=1")["Content-Disposition"].startswith("attachment")


def test_log_txt_is_every_stored_line_after_the_offset(client: Client) -> None:
    job = finished_run(["first", "<b>second</b>", "third"])
    response = client.get(f"/jobs/{job.id}/log.txt")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert streamed(response) == b"first\n<b>second</b>\nthird\n"
    assert streamed(client.get(f"/jobs/{job.id}/log.txt?offset=2")) == b"third\n"
    assert streamed(client.get(f"/jobs/{job.id}/log.txt?offset=3")) == b""
    assert streamed(client.get(f"/jobs/{job.id}/log.txt?offset=3000000000")) == b""


def test_log_txt_download_is_the_whole_log_as_a_file_named_after_the_run_and_its_date(client: Client) -> None:
    job = finished_run(["first", "second"])
    created = datetime(2026, 11, 21, 20, 34, 7, 58810, tzinfo=UTC)
    Job.objects.filter(pk=job.pk).update(name="demo.count", created_at=created)
    response = client.get(f"/jobs/{job.id}/log.txt?download=1")
    assert response.status_code == 200
    assert response["Content-Disposition"] == 'attachment; filename="demo.count-20261121-203407.log"'
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    assert streamed(response) == b"first\nsecond\n"
    assert not client.get(f"/jobs/{job.id}/log.txt").has_header("Content-Disposition")
    assert client.get(f"/jobs/{job.id}/log.txt?download=maybe").status_code == 400
    with override_settings(TIME_ZONE="Europe/Paris"):  # the server's time zone, as on its pages
        assert (
            'filename="demo.count-20261121-213407.log"'
            in client.get(f"/jobs/{job.id}/log.txt?download=1")["Content-Disposition"]
        )


@pytest.mark.parametrize(
    ("name", "file_name"),
    [
        ("reports.rebuild", "reports.rebuild"),
        ('a b/c\\d:"e";f\r\ng', "a_b_c_d_e_f_g"),
        ("héllo wörld", "h_llo_w_rld"),
        ("../../etc/passwd", "etc_passwd"),
        ("...", "job"),
    ],
)
def test_the_download_name_keeps_safe_characters_only(client: Client, name: str, file_name: str) -> None:
    job = finished_run(["x"])
    Job.objects.filter(pk=job.pk).update(name=name, created_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    disposition = client.get(f"/jobs/{job.id}/log.txt?download=1")["Content-Disposition"]
    assert disposition == f'attachment; filename="{file_name}-20260102-030405.log"'


def test_log_txt_follow_streams_a_running_job_to_its_end(client: Client) -> None:
    job = launch("demo.count", n=4, interval=0.05)
    body = streamed(client.get(f"/jobs/{job.id}/log.txt?follow=1"))
    assert body == b"Task #0\nTask #1\nTask #2\nTask #3\nDone\n"


def test_log_txt_follow_must_be_a_flag(client: Client) -> None:
    job = finished_run(["a"])
    response = client.get(f"/jobs/{job.id}/log.txt?follow=maybe")
    assert response.status_code == 400
    assert b"follow must be 1 or 0" in response.content


def test_a_replay_longer_than_one_chunk_is_complete_and_in_order(client: Client) -> None:
    lines = [f"line {n}" for n in range(1, 5002)]
    job = finished_run(lines)
    assert streamed(client.get(f"/jobs/{job.id}/log.txt")).decode().splitlines() == lines
    _, parsed = parse_sse(streamed(client.get(f"/jobs/{job.id}/events?offset=1")))
    assert [n for n, _ in numbers_and_texts(parsed)] == list(range(2, 5002))


def test_lines_returns_a_range_as_json(client: Client) -> None:
    job = finished_run(["a", "b", "c", "d"], stream="stderr")
    data = client.get(f"/jobs/{job.id}/lines?offset=1&limit=2").json()
    assert data["line_count"] == 4
    assert [(line["n"], line["text"], line["stream"]) for line in data["lines"]] == [
        (2, "b", "stderr"),
        (3, "c", "stderr"),
    ]
    assert client.get(f"/jobs/{job.id}/lines?limit=x").status_code == 400


def test_status_is_the_designed_json(client: Client) -> None:
    job = launch("demo.count", n=1, interval=0)
    wait_finished(job)
    data = client.get(f"/jobs/{job.id}/status").json()
    assert data["id"] == str(job.id)
    assert data["name"] == "demo.count"
    assert data["params"] == {"n": 1, "interval": 0.0}
    assert data["status"] == "succeeded"
    assert data["finished"] is True
    assert data["line_count"] == 2
    assert data["error"] == ""
    assert data["started_at"] and data["finished_at"] and data["created_at"]
    assert data["duration"] >= 0


def test_endpoints_take_only_their_method(client: Client) -> None:
    job = finished_run(["a"])
    assert client.post(f"/jobs/{job.id}/events").status_code == 405
    assert client.post(f"/jobs/{job.id}/status").status_code == 405
    assert client.get(f"/jobs/{job.id}/cancel").status_code == 405


# --- cancel -------------------------------------------------------------------------------------


def test_cancel_stops_a_running_job_and_answers_json(client: Client) -> None:
    job = launch("demo.count", n=1000, interval=0.05)
    response = client.post(f"/jobs/{job.id}/cancel", HTTP_ACCEPT="application/json")
    assert response.status_code == 202
    assert response.json()["cancel_requested"] is True
    job = wait_finished(job)
    assert job.status == JobStatus.CANCELLED
    again = client.post(f"/jobs/{job.id}/cancel", HTTP_ACCEPT="application/json")
    assert again.status_code == 409


def test_cancel_from_a_form_redirects_to_the_job_page(client: Client) -> None:
    job = finished_run(["a"])
    response = client.post(f"/jobs/{job.id}/cancel")
    assert response.status_code == 302
    assert response["Location"] == f"/jobs/{job.id}/"


# --- ASGI: the async generator ------------------------------------------------------------------


def test_under_asgi_the_events_stream_is_async_and_exactly_the_log(staff_user: Any) -> None:
    job = launch("demo.count", n=5, interval=0.05)

    async def fetch() -> tuple[Any, bytes]:
        client = AsyncClient()
        await client.aforce_login(staff_user)
        response = await client.get(f"/jobs/{job.id}/events")
        assert response.is_async  # Django would buffer a sync iterator under ASGI
        chunks = [chunk async for chunk in response.streaming_content]
        return response, b"".join(chunks)

    response, body = asyncio.run(fetch())
    assert response.status_code == 200
    _, parsed = parse_sse(body)
    job.refresh_from_db()
    assert numbers_and_texts(parsed) == stored(job)
    assert parsed[-1][0] == "done"


# --- the follow algorithm -----------------------------------------------------------------------


def take_events(job_id: uuid.UUID, after: int) -> Iterator[Any]:
    return events(job_id, after, live=True)


def test_lines_published_between_the_replay_and_the_live_tail_are_sent_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A run of another process (rows written here, as its flusher would): lines stored
    before the viewer's replay, during it and after it all arrive, each exactly once."""
    monkeypatch.setattr("jobs.streaming.follow.REPLAY_CHUNK", 2000)
    job = running_run()
    store_lines(job, 1, 3000)  # more than one replay chunk
    received: list[int] = []
    stream = take_events(job.id, 0)
    finished = threading.Event()

    def read() -> None:
        for event in stream:
            if isinstance(event, Lines):
                received.extend(row[0] for row in event.rows)
                if received[-1] == 3000:
                    store_lines(job, 3001, 3500)  # stored while the viewer is between replay and live
            if isinstance(event, Done):
                finished.set()
                return

    reader = threading.Thread(target=read)
    reader.start()
    try:
        wait_for(lambda: len(received) >= 3500, "the viewer to get the lines stored meanwhile")
        store_lines(job, 3501, 3600)
        wait_for(lambda: len(received) >= 3600, "the viewer to tail the later lines through the poller")
        Job.objects.filter(pk=job.pk).update(status=JobStatus.SUCCEEDED, finished_at=timezone.now())
        announce(job.id, 3600)  # as a change of a run's status is
        assert finished.wait(60)
    finally:
        Job.objects.filter(pk=job.pk).update(status=JobStatus.SUCCEEDED)
        reader.join(60)
    assert received == list(range(1, 3601))


def test_a_viewer_that_overflows_the_hub_catches_up_from_the_database(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("jobs.logstore.hub.SUBSCRIBER_BUFFER", 2)
    job = launch("demo.count", n=300, interval=0.001)
    stream = take_events(job.id, 0)
    first = next(stream)
    assert isinstance(first, Status)
    # While this viewer does not read, the hub drops its batches (buffer of 2).
    wait_finished(job)
    received = [row[0] for event in stream if isinstance(event, Lines) for row in event.rows]
    assert received == list(range(1, 302))


def test_subscribers_are_released_when_a_viewer_stops() -> None:
    job = running_run()  # a run of no process here: its viewers are the poller's work
    stream = take_events(job.id, 0)
    next(stream)
    with hub.watchers_changed:
        assert job.id in hub.remote_jobs()
    stream.close()  # what a WSGI server does when the client goes away
    with hub.watchers_changed:
        assert job.id not in hub.remote_jobs()


def test_a_line_has_the_same_time_live_and_replayed(client: Client) -> None:
    """Live lines carry the flusher's datetime, replayed ones the database's text: both
    are written as the same ISO 8601 string."""
    job = launch("demo.count", n=3, interval=0.05)
    _, live = parse_sse(streamed(client.get(f"/jobs/{job.id}/events")))
    _, replayed = parse_sse(streamed(client.get(f"/jobs/{job.id}/events")))
    times_live = [json.loads(data)["t"] for kind, data, _ in live if kind == "message"]
    times_replayed = [json.loads(data)["t"] for kind, data, _ in replayed if kind == "message"]
    assert times_live == times_replayed
    assert all(time.endswith("+00:00") and "T" in time for time in times_live)
