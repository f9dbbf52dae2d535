"""Storing a run's log: real runs through the runner, the flusher and the database.

Each test checks what a user reads back from the database: every line, in order, numbered
1..line_count, with the text the job wrote (made storable where it had to be) and its stream.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import tracemalloc

import pytest
from django.db.models import Sum
from django.db.models.functions import Length
from django.test import override_settings

from jobs import job, run_command
from jobs.choices import LogStream
from jobs.conf import runlog_settings
from jobs.logstore.flusher import STORE_GAP
from jobs.logstore.writer import CHUNK_CHARS, Batch
from jobs.models import Job, JobStatus, LogLine
from tests.conftest import assert_contiguous, log_texts, run_now

pytestmark = pytest.mark.django_db(transaction=True)

HUGE_LINE_CHARS = 10_000_000
PROGRESS_UPDATES = 1_000_000


def flood_line(index: int, width: int) -> str:
    """The line demo.flood prints as line `index` (0-based)."""
    return f"{index:>12} {'x' * max(0, width - 13)}"


def run(name: str, **params: object) -> Job:
    """Run the job to its end and read it back: the Job that run_now() returns holds the
    status it set, not the line count the flusher stored meanwhile."""
    job_run = run_now(name, **params)
    job_run.refresh_from_db()
    return job_run


def stored(job_id: object) -> list[tuple[int, str, str]]:
    return list(LogLine.objects.filter(job_id=job_id).order_by("number").values_list("number", "stream", "text"))


# --- Test jobs ---------------------------------------------------------------------------------


@job("log_storage_tests.bad_text")
def bad_text() -> None:
    print("nul\x00inside")
    print("lone \ud800 surrogate")
    # What os.fsdecode() or a surrogateescape reader makes of bytes that are not UTF-8.
    print(b"latin-1 caf\xe9 \xff".decode("utf-8", "surrogateescape"))
    print("caf\u00e9 \U0001f600 fine", file=sys.stderr)
    # A child writing bytes that are not UTF-8 at all.
    run_command(
        [sys.executable, "-c", r"import sys; sys.stdout.buffer.write(b'child \xff\xfe\x00 bytes\n')"],
        echo=False,
        check=True,
    )


@job("log_storage_tests.huge_line")
def huge_line() -> None:
    print("before")
    print(_huge_text())
    print("after")
    print("the end")


def _huge_text() -> str:
    """10 MB in which any lost, repeated or reordered stretch changes the text."""
    return "".join(f"{index:09d}|" for index in range(HUGE_LINE_CHARS // 10))


@job("log_storage_tests.progress")
def progress_bar() -> None:
    print("starting")
    write = sys.stdout.write
    for index in range(PROGRESS_UPDATES):
        write(f"\rprogress {index + 1}/{PROGRESS_UPDATES}")
    write("\n")
    print("finished")


@job("log_storage_tests.unfinished_last_line")
def unfinished_last_line() -> None:
    print("first line")
    sys.stdout.write("last line without newline")


@job("log_storage_tests.streams")
def streams() -> None:
    print("to stdout")
    print("to stderr", file=sys.stderr)
    logging.getLogger("log_storage_tests").warning("logged")
    worker = threading.Thread(target=print, args=("from a thread the job started",))
    worker.start()
    worker.join()
    sys.stderr.write("stderr again\n")
    sys.exit(3)  # a failing exit status: Runlog notes it as a system line


@job("log_storage_tests.count_lines")
def count_lines(lines: int) -> None:
    for index in range(lines):
        print(f"line {index + 1}")
    print("the job reached its end")


@job("log_storage_tests.steady")
def steady(lines: int, interval: float) -> None:
    for index in range(lines):
        print(f"line {index + 1}")
        time.sleep(interval)


# --- Tests -------------------------------------------------------------------------------------


def test_flood_is_stored_completely_and_in_order() -> None:
    lines = 200_000
    job_run = run("demo.flood", lines=lines, width=80)
    assert job_run.status == JobStatus.SUCCEEDED
    assert job_run.line_count == lines
    assert log_texts(job_run) == [flood_line(index, 80) for index in range(lines)]
    assert_contiguous(job_run)


def test_a_job_printing_without_pause_is_stored_a_few_times_a_second_not_per_line() -> None:
    """500 lines over at least 0.5 s, one every millisecond: the flusher could store each
    alone (and announce each store to other processes); it stores at most one batch per
    STORE_GAP, with every line."""
    from jobs.launcher import create_run
    from jobs.logstore.hub import hub
    from jobs.running.runner import start

    job_run = create_run("log_storage_tests.steady", {"lines": 500, "interval": 0.001})
    subscription = hub.subscribe(job_run.id)
    started = time.monotonic()
    try:
        job_run = start().run(job_run)
        elapsed = time.monotonic() - started
        items, overflowed = subscription.take()
    finally:
        hub.unsubscribe(subscription)
    assert job_run.status == JobStatus.SUCCEEDED and not overflowed
    batches = [item for item in items if isinstance(item, Batch) and len(item)]
    assert sum(len(batch) for batch in batches) == job_run.line_count == 500
    assert len(batches) <= elapsed / STORE_GAP + 2


def test_writer_memory_stays_bounded_while_a_job_floods_long_lines() -> None:
    # 50,000 lines of 800 characters: 40 MB of output, printed faster than the database
    # takes it. The job's print() blocks once its writer holds WRITER_BUFFER chunks, so at
    # any moment Runlog holds about two buffers of text: the one the job is filling and
    # the one the flusher drained and is storing (plus that batch's lines and their JSON or
    # COPY encoding, each about as large). A chunk is at most CHUNK_CHARS characters, so
    # with 256 chunks a buffer is at most 1 MiB of ASCII; here print() writes each line and
    # its newline as two chunks, so it is really about 128 lines (100 kB). Without the
    # backpressure the unstored output piles up (25 MB on SQLite, 45 MB on PostgreSQL when
    # this test was written, with RUNLOG_WRITER_BUFFER set out of reach).
    lines, width, buffer_chunks = 50_000, 800, 256
    with override_settings(RUNLOG_WRITER_BUFFER=buffer_chunks):
        already_tracing = tracemalloc.is_tracing()  # e.g. python -X tracemalloc
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            job_run = run("demo.flood", lines=lines, width=width)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            if not already_tracing:
                tracemalloc.stop()
    assert job_run.status == JobStatus.SUCCEEDED, job_run.error
    assert job_run.line_count == lines
    line_length = len(flood_line(0, width))
    assert LogLine.objects.filter(job=job_run).aggregate(chars=Sum(Length("text")))["chars"] == lines * line_length
    worst_buffer_bytes = buffer_chunks * CHUNK_CHARS
    output_bytes = lines * (line_length + 1)
    assert 4 * worst_buffer_bytes < output_bytes / 9  # the bound below means something
    assert peak < 4 * worst_buffer_bytes


def test_text_no_database_accepts_as_is_is_stored_readably() -> None:
    job_run = run("log_storage_tests.bad_text")
    assert job_run.status == JobStatus.SUCCEEDED, job_run.error
    assert [(stream, text) for _, stream, text in stored(job_run.id)] == [
        ("stdout", "nul\ufffdinside"),
        ("stdout", "lone \ufffd surrogate"),
        ("stdout", "latin-1 caf\ufffd \ufffd"),
        ("stderr", "caf\u00e9 \U0001f600 fine"),
        ("stdout", "child \ufffd\ufffd\ufffd bytes"),
    ]
    assert_contiguous(job_run)


def test_ten_megabyte_line_is_wrapped_with_nothing_lost() -> None:
    job_run = run("log_storage_tests.huge_line")
    assert job_run.status == JobStatus.SUCCEEDED, job_run.error
    texts = log_texts(job_run)
    max_length = runlog_settings.MAX_LINE_LENGTH
    pieces = -(-HUGE_LINE_CHARS // max_length)  # ceiling division
    assert texts[0] == "before"
    assert "".join(texts[1 : 1 + pieces]) == _huge_text()
    assert all(len(text) == max_length for text in texts[1:pieces])
    assert texts[1 + pieces :] == ["after", "the end"]
    assert job_run.line_count == pieces + 3
    assert_contiguous(job_run)


def test_a_million_progress_updates_are_stored_as_one_line() -> None:
    job_run = run("log_storage_tests.progress")
    assert job_run.status == JobStatus.SUCCEEDED, job_run.error
    assert log_texts(job_run) == ["starting", f"progress {PROGRESS_UPDATES}/{PROGRESS_UPDATES}", "finished"]
    assert job_run.line_count == 3


def test_unfinished_last_line_is_stored_as_the_last_line() -> None:
    job_run = run("log_storage_tests.unfinished_last_line")
    assert job_run.status == JobStatus.SUCCEEDED, job_run.error
    assert log_texts(job_run) == ["first line", "last line without newline"]
    assert job_run.line_count == 2


def test_lines_past_max_lines_are_counted_not_stored() -> None:
    cap, lines = 100, 2_000
    with override_settings(RUNLOG_MAX_LINES=cap):
        job_run = run("log_storage_tests.count_lines", lines=lines)
    # The job was not stopped: it ran to its end (its last line is among those counted).
    assert job_run.status == JobStatus.SUCCEEDED, job_run.error
    assert job_run.line_count == cap + 1
    assert_contiguous(job_run)
    rows = stored(job_run.id)
    assert [(stream, text) for _, stream, text in rows[:cap]] == [("stdout", f"line {n}") for n in range(1, cap + 1)]
    number, stream, marker = rows[cap]
    assert (number, stream) == (cap + 1, LogStream.SYSTEM)
    not_stored = lines + 1 - cap  # the job's lines past the cap, its final line included
    assert f"{cap:,} lines" in marker
    assert f"{not_stored:,} later lines were not stored" in marker


def test_each_line_is_tagged_with_its_stream() -> None:
    job_run = run("log_storage_tests.streams")
    assert job_run.status == JobStatus.FAILED
    assert [(stream, text) for _, stream, text in stored(job_run.id)] == [
        ("stdout", "to stdout"),
        ("stderr", "to stderr"),
        ("log", "WARNING log_storage_tests: logged"),
        ("stdout", "from a thread the job started"),
        ("stderr", "stderr again"),
        ("system", "The job exited with status 3."),
    ]
    assert_contiguous(job_run)
