"""Capture: what a job writes (print, sys.stdout/stderr, logging, its threads) lands in
that job's log, and only there; what other threads write does not."""

from __future__ import annotations

import io
import logging
import sys
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import pytest
from django.utils.safestring import mark_safe

import jobs
from jobs import job
from jobs.conf import runlog_settings
from jobs.models import Job, JobStatus, LogLine, LogStream
from jobs.running import capture
from tests.conftest import WAIT, assert_contiguous, log_texts, run_now, wait_finished

# The tests and the jobs they run share this process: jobs find their events and
# barriers here by the token the test passes as a parameter.
_events: dict[str, threading.Event] = {}
_barriers: dict[str, threading.Barrier] = {}
_threads: dict[str, threading.Thread] = {}

job_logger = logging.getLogger("capture_tests.joblogger")
# Explicit, so that these tests do not depend on LOG_LEVEL in the environment.
job_logger.setLevel(logging.INFO)


def _event(token: str) -> threading.Event:
    return _events.setdefault(token, threading.Event())


def _wait(event: threading.Event) -> None:
    if not event.wait(WAIT):
        raise TimeoutError("the test never set the event")


def lines_of(job: Job) -> list[tuple[str, str]]:
    """(stream, text) of every stored line, in order."""
    return list(LogLine.objects.filter(job=job).order_by("number").values_list("stream", "text"))


class ProcessStream(io.TextIOWrapper):
    """A text stream over bytes in memory, with a `buffer`, as the process's real stdout."""

    def __init__(self) -> None:
        super().__init__(io.BytesIO(), encoding="utf-8", write_through=True)

    def getvalue(self) -> str:
        return self.buffer.getvalue().decode()  # type: ignore[attr-defined]


@contextmanager
def process_stdout() -> Iterator[ProcessStream]:
    """Stand in for the process's real stdout: capture wraps this instead, so the test sees
    exactly what threads that run no job write. Used inside the test body, because pytest
    puts its own sys.stdout back between a fixture's setup and the test."""
    saved_stream, saved_original = sys.stdout, capture.original_stream("stdout")
    fake = ProcessStream()
    sys.stdout = fake
    try:
        capture.install()
        assert isinstance(sys.stdout, capture.StreamRouter)
        assert capture.original_stream("stdout") is fake
        yield fake
    finally:
        # Installed over the real stream again, capture takes it back as the original.
        sys.stdout = saved_original
        capture.install()
        sys.stdout = saved_stream


# --- Jobs used by these tests ------------------------------------------------------------


@job("capture_tests.streams")
def streams_job() -> None:
    print("printed")
    print("two", "words", sep="-")
    sys.stdout.write("written\n")
    sys.stdout.write("one line ")
    sys.stdout.write("from two writes\n")
    print("to stderr", file=sys.stderr)
    sys.stderr.write("written to stderr\n")
    sys.stdout.writelines(["first of several\n", "second of several\n"])
    print("flushed", flush=True)
    sys.stdout.flush()
    sys.stderr.flush()


@job("capture_tests.logging")
def logging_job() -> None:
    job_logger.info("info from the job")
    job_logger.warning("warning from the job: %d", 42)
    print("printed between records")
    try:
        raise ValueError("boom")
    except ValueError:
        job_logger.exception("it broke")


@job("capture_tests.wait")
def waiting_job(token: str) -> None:
    """Logs and prints, then tells the test it is running and waits to be released."""
    job_logger.warning("record from the waiting job")
    print("line from the waiting job")
    _event(f"{token}-running").set()
    _wait(_event(f"{token}-release"))
    print("released")


@job("capture_tests.child_threads")
def child_threads_job() -> None:
    def plain(name: str) -> None:
        print(f"{name} printed")
        print(f"{name} to stderr", file=sys.stderr)
        job_logger.info("%s logged", name)

    def parent() -> None:
        plain("thread")
        grandchild = threading.Thread(target=plain, args=("grandchild",))
        grandchild.start()
        grandchild.join()

    # One thread at a time: print() is two writes, and concurrent prints may interleave
    # (as on a terminal). The pool's tasks use single writes for that reason.
    child = threading.Thread(target=parent)
    child.start()
    child.join()
    with ThreadPoolExecutor(max_workers=3) as pool:
        list(pool.map(lambda n: sys.stdout.write(f"pool task {n}\n"), range(6)))
        list(pool.map(lambda n: job_logger.warning("pool record %d", n), range(3)))
    print("job done")


@job("capture_tests.leaves_thread")
def leaves_thread_job(token: str) -> None:
    """Starts a thread that writes once during the job and once after it has ended."""

    def straggler() -> None:
        print("straggler during the job")
        _event(f"{token}-wrote").set()
        _wait(_event(f"{token}-job-ended"))
        print("straggler after the job")

    thread = threading.Thread(target=straggler, name=f"straggler-{token}")
    _threads[token] = thread  # so that the test can join it
    thread.start()
    _wait(_event(f"{token}-wrote"))
    print("job returns")


@job("capture_tests.pingpong")
def pingpong_job(token: str, me: str, rounds: int = 50) -> None:
    """Two of these run at once, in lock step: each round both write before either goes on."""
    barrier = _barriers[token]
    for index in range(rounds):
        print(f"{me} says {index}")
        job_logger.info("%s logs %d", me, index)
        barrier.wait(WAIT)


@job("capture_tests.str_subclass")
def str_subclass_job() -> None:
    print("before")
    # What print(render_to_string(...)) or print(format_html(...)) writes: a SafeString,
    # whose __str__ returns itself, so print() hands the str subclass to sys.stdout.write.
    print(mark_safe("<b>rendered</b>"))
    sys.stdout.write(mark_safe("written safe string\n"))
    print("after")


@job("capture_tests.bytes")
def bytes_job() -> None:
    print("before")
    for name, stream in (("stdout", sys.stdout), ("stderr", sys.stderr)):
        try:
            stream.write(b"raw bytes\n")  # type: ignore[arg-type]
        except TypeError:
            print(f"TypeError from {name}")  # what a text stream does with bytes
    print("after")


@job("capture_tests.binary")
def binary_job() -> None:
    out, err = sys.stdout.buffer, sys.stderr.buffer
    print("text first")
    out.write(b"bytes line\n")
    out.write(b"caf")
    out.write(b"\xc3")  # the first byte of the two of "é"...
    out.flush()
    out.write(b"\xa9 split\n")  # ...and the second
    out.write(bytearray(b"bad \xff\xfe bytes\n"))
    out.write(memoryview(b"one line "))
    print("ends as text")
    err.write(b"to stderr\n")
    wrapped = io.TextIOWrapper(out, encoding="utf-8", write_through=True)
    wrapped.write("through a TextIOWrapper\n")
    wrapped.detach()  # closing the wrapper would close the job's stream
    try:
        out.write("text")  # type: ignore[arg-type]
    except TypeError:
        print("TypeError for str, as from a real buffer")
    thread = threading.Thread(target=lambda: sys.stdout.buffer.write("from a thread ✓\n".encode()))
    thread.start()
    thread.join()
    out.write(b"incomplete \xe2\x82")  # the job ends in the middle of a character


THREAD_LINES = 100


@job("capture_tests.marker")
def marker_job(marker: str, lines: int = 500, threads: int = 0, rendezvous: str = "") -> None:
    """`lines` lines from the job's thread; THREAD_LINES more from each of `threads` threads."""
    half = lines // 2
    for index in range(half):
        print(f"{marker} main {index}")
    if rendezvous:
        # Hold here until the other jobs of the rendezvous are running too, so that they
        # are all live at once.
        _barriers[rendezvous].wait(WAIT)

    def child(number: int) -> None:
        for index in range(THREAD_LINES):
            sys.stdout.write(f"{marker} thread {number} {index}\n")  # one write: one line

    started = [threading.Thread(target=child, args=(number,)) for number in range(threads)]
    for thread in started:
        thread.start()
    for thread in started:
        thread.join()
    for index in range(half, lines):
        print(f"{marker} main {index}")


# --- Tests -------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_print_stdout_and_stderr_are_stored_in_order_and_tagged() -> None:
    run = run_now("capture_tests.streams")
    assert run.status == JobStatus.SUCCEEDED
    assert lines_of(run) == [
        (LogStream.STDOUT, "printed"),
        (LogStream.STDOUT, "two-words"),
        (LogStream.STDOUT, "written"),
        (LogStream.STDOUT, "one line from two writes"),
        (LogStream.STDERR, "to stderr"),
        (LogStream.STDERR, "written to stderr"),
        (LogStream.STDOUT, "first of several"),
        (LogStream.STDOUT, "second of several"),
        (LogStream.STDOUT, "flushed"),
    ]
    assert_contiguous(run)
    assert run.line_count == 9


@pytest.mark.django_db(transaction=True)
def test_bytes_written_to_the_buffers_are_decoded_into_the_log() -> None:
    run = run_now("capture_tests.binary")
    assert run.status == JobStatus.SUCCEEDED, run.error
    assert lines_of(run) == [
        (LogStream.STDOUT, "text first"),
        (LogStream.STDOUT, "bytes line"),
        (LogStream.STDOUT, "café split"),
        (LogStream.STDOUT, "bad \ufffd\ufffd bytes"),
        (LogStream.STDOUT, "one line ends as text"),
        (LogStream.STDERR, "to stderr"),
        (LogStream.STDOUT, "through a TextIOWrapper"),
        (LogStream.STDOUT, "TypeError for str, as from a real buffer"),
        (LogStream.STDOUT, "from a thread ✓"),
        (LogStream.STDOUT, "incomplete \ufffd"),
    ]
    assert_contiguous(run)


@pytest.mark.django_db(transaction=True)
def test_logging_records_are_stored_with_level_and_logger_name() -> None:
    run = run_now("capture_tests.logging")
    assert run.status == JobStatus.SUCCEEDED
    lines = lines_of(run)
    assert lines[:4] == [
        (LogStream.LOG, "INFO capture_tests.joblogger: info from the job"),
        (LogStream.LOG, "WARNING capture_tests.joblogger: warning from the job: 42"),
        (LogStream.STDOUT, "printed between records"),
        (LogStream.LOG, "ERROR capture_tests.joblogger: it broke"),
    ]
    # The traceback of logger.exception() follows, one stored line per line of it.
    traceback_lines = lines[4:]
    assert {stream for stream, _ in traceback_lines} == {LogStream.LOG}
    assert traceback_lines[0][1] == "Traceback (most recent call last):"
    assert traceback_lines[-1][1] == "ValueError: boom"
    assert_contiguous(run)


@pytest.mark.django_db(transaction=True)
def test_logging_outside_a_job_stays_out_of_it_and_a_jobs_records_stay_off_the_console(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The console handler of the project's LOGGING: records of job threads must skip it.
    console = [
        handler
        for handler in logging.getLogger().handlers
        if any(isinstance(f, capture.NotFromAJobFilter) for f in handler.filters)
    ]
    assert console, "the project's console handler should carry NotFromAJobFilter"
    console_output = io.StringIO()
    previous_streams = [handler.setStream(console_output) for handler in console]  # type: ignore[attr-defined]
    outside_logger = logging.getLogger("capture_tests.outside")
    token = uuid.uuid4().hex
    try:
        run = jobs.launch("capture_tests.wait", token=token)
        try:
            _wait(_event(f"{token}-running"))
            # While the job runs: a record from the test's thread and one from a plain thread.
            outside_logger.warning("outside record from the test thread")
            other = threading.Thread(target=outside_logger.warning, args=("outside record from a plain thread",))
            other.start()
            other.join()
        finally:
            _event(f"{token}-release").set()
        wait_finished(run)
    finally:
        for handler, stream in zip(console, previous_streams, strict=True):
            handler.setStream(stream)  # type: ignore[attr-defined]

    assert run.status == JobStatus.SUCCEEDED
    assert lines_of(run) == [
        (LogStream.LOG, "WARNING capture_tests.joblogger: record from the waiting job"),
        (LogStream.STDOUT, "line from the waiting job"),
        (LogStream.STDOUT, "released"),
    ]
    # The outside records went the ordinary way: to the console and to other handlers.
    assert "outside record from the test thread" in console_output.getvalue()
    assert "outside record from a plain thread" in console_output.getvalue()
    assert "outside record from the test thread" in caplog.text
    # The job's record is in its log, not also on the console.
    assert "record from the waiting job" not in console_output.getvalue()


@pytest.mark.django_db(transaction=True)
def test_threads_and_pool_workers_started_by_a_job_write_to_its_log() -> None:
    run = run_now("capture_tests.child_threads")
    assert run.status == JobStatus.SUCCEEDED
    lines = lines_of(run)
    assert lines[:6] == [
        (LogStream.STDOUT, "thread printed"),
        (LogStream.STDERR, "thread to stderr"),
        (LogStream.LOG, "INFO capture_tests.joblogger: thread logged"),
        (LogStream.STDOUT, "grandchild printed"),
        (LogStream.STDERR, "grandchild to stderr"),
        (LogStream.LOG, "INFO capture_tests.joblogger: grandchild logged"),
    ]
    # The pool's workers run concurrently: their order is theirs to choose.
    assert Counter(lines[6:-1]) == Counter(
        [(LogStream.STDOUT, f"pool task {n}") for n in range(6)]
        + [(LogStream.LOG, f"WARNING capture_tests.joblogger: pool record {n}") for n in range(3)]
    )
    assert lines[-1] == (LogStream.STDOUT, "job done")
    assert_contiguous(run)


@pytest.mark.django_db(transaction=True)
def test_a_thread_running_no_job_writes_to_the_process_not_to_the_running_job() -> None:
    token = uuid.uuid4().hex
    with process_stdout() as process_output:
        run = jobs.launch("capture_tests.wait", token=token)
        try:
            _wait(_event(f"{token}-running"))
            outsider = threading.Thread(target=print, args=("outsider line",))
            outsider.start()
            outsider.join()
            print("test thread line")
            assert sys.stdout.buffer is process_output.buffer
            sys.stdout.buffer.write(b"test thread bytes\n")
            outsider = threading.Thread(target=lambda: sys.stdout.buffer.write(b"outsider bytes\n"))
            outsider.start()
            outsider.join()
        finally:
            _event(f"{token}-release").set()
        wait_finished(run)

    assert run.status == JobStatus.SUCCEEDED
    assert log_texts(run) == [
        "WARNING capture_tests.joblogger: record from the waiting job",
        "line from the waiting job",
        "released",
    ]
    assert process_output.getvalue() == "outsider line\ntest thread line\ntest thread bytes\noutsider bytes\n"


@pytest.mark.django_db(transaction=True)
def test_the_thread_that_ran_a_job_writes_to_the_process_again_afterwards() -> None:
    with process_stdout() as process_output:
        run = run_now("demo.echo", text="inside the job")
        print("after the job")
        sys.stdout.buffer.write(b"bytes after the job\n")
    assert log_texts(run) == ["inside the job"]
    assert process_output.getvalue() == "after the job\nbytes after the job\n"


@pytest.mark.django_db(transaction=True)
def test_a_thread_that_outlives_its_job_writes_to_the_process_after_the_job_ended() -> None:
    token = uuid.uuid4().hex
    with process_stdout() as process_output:
        run = run_now("capture_tests.leaves_thread", token=token)
        straggler = _threads.pop(token)
        _event(f"{token}-job-ended").set()
        straggler.join(WAIT)
    assert not straggler.is_alive()

    assert run.status == JobStatus.SUCCEEDED
    assert Counter(log_texts(run)) == Counter(["straggler during the job", "job returns"])
    assert process_output.getvalue() == "straggler after the job\n"
    # Nothing was added to the finished job's log.
    run.refresh_from_db()
    assert run.line_count == 2
    assert_contiguous(run)


@pytest.mark.django_db(transaction=True)
def test_two_jobs_running_at_once_never_see_each_others_lines() -> None:
    token = uuid.uuid4().hex
    _barriers[token] = threading.Barrier(2)
    rounds = 50
    alpha = jobs.launch("capture_tests.pingpong", token=token, me="alpha", rounds=rounds)
    beta = jobs.launch("capture_tests.pingpong", token=token, me="beta", rounds=rounds)
    wait_finished(alpha, beta)

    for run, me in ((alpha, "alpha"), (beta, "beta")):
        assert run.status == JobStatus.SUCCEEDED, run.error
        expected: list[tuple[str, str]] = []
        for index in range(rounds):
            expected.append((LogStream.STDOUT, f"{me} says {index}"))
            expected.append((LogStream.LOG, f"INFO capture_tests.joblogger: {me} logs {index}"))
        assert lines_of(run) == expected
        assert_contiguous(run)


@pytest.mark.django_db(transaction=True)
def test_twenty_concurrent_jobs_each_get_exactly_their_own_lines() -> None:
    count, lines = 20, 500
    # The first two jobs wait for each other half-way, so that at least two are certainly
    # writing at the same time (the other workers run the rest alongside). Two, not one
    # per worker, so that a worker busy elsewhere cannot make this test fail.
    token = uuid.uuid4().hex
    together = min(runlog_settings.WORKERS, 2)
    _barriers[token] = threading.Barrier(together)
    runs: list[tuple[Job, str, int]] = []
    for index in range(count):
        marker = f"job{index:02d}"
        threads = 2 if index % 3 == 0 else 0
        rendezvous = token if index < together else ""
        run = jobs.launch("capture_tests.marker", marker=marker, lines=lines, threads=threads, rendezvous=rendezvous)
        runs.append((run, marker, threads))
    wait_finished(*(run for run, _, _ in runs), timeout=120)

    for run, marker, threads in runs:
        assert run.status == JobStatus.SUCCEEDED, run.error
        texts = log_texts(run)
        main = [f"{marker} main {index}" for index in range(lines)]
        from_threads = [f"{marker} thread {n} {index}" for n in range(threads) for index in range(THREAD_LINES)]
        assert Counter(texts) == Counter(main + from_threads)
        assert run.line_count == lines + threads * THREAD_LINES
        # Each thread's own lines keep their order.
        assert [text for text in texts if " main " in text] == main
        for n in range(threads):
            prefix = f"{marker} thread {n} "
            assert [text for text in texts if text.startswith(prefix)] == [
                f"{prefix}{index}" for index in range(THREAD_LINES)
            ]
        assert set(LogLine.objects.filter(job=run).values_list("stream", flat=True)) == {LogStream.STDOUT}
        assert_contiguous(run)


@pytest.mark.django_db(transaction=True)
def test_demo_threads_stores_every_workers_lines() -> None:
    run = run_now("demo.threads", workers=4, lines=3)
    assert run.status == JobStatus.SUCCEEDED
    texts = log_texts(run)
    expected = [f"worker {index}: line {line} of 3" for index in range(4) for line in range(1, 4)]
    assert Counter(texts[:-1]) == Counter(expected)
    for index in range(4):
        assert [text for text in texts if text.startswith(f"worker {index}:")] == [
            f"worker {index}: line {line} of 3" for line in range(1, 4)
        ]
    assert texts[-1] == "All 4 workers finished"
    assert_contiguous(run)


@pytest.mark.django_db(transaction=True)
def test_demo_logging_stores_its_records() -> None:
    run = run_now("demo.logging")
    assert run.status == JobStatus.SUCCEEDED
    assert lines_of(run) == [
        (LogStream.LOG, "INFO demo: Starting the logging demo"),
        (LogStream.LOG, "WARNING demo: This is a warning"),
        (LogStream.LOG, "INFO demo: Finished the logging demo"),
    ]
    assert_contiguous(run)


@pytest.mark.django_db(transaction=True)
def test_printing_a_str_subclass_such_as_a_safestring_is_stored() -> None:
    run = run_now("capture_tests.str_subclass")
    assert run.status == JobStatus.SUCCEEDED, run.error
    assert log_texts(run) == ["before", "<b>rendered</b>", "written safe string", "after"]
    assert_contiguous(run)


@pytest.mark.django_db(transaction=True)
def test_writing_bytes_raises_type_error_in_the_job_as_on_a_text_stream() -> None:
    run = run_now("capture_tests.bytes")
    assert run.status == JobStatus.SUCCEEDED, run.error
    assert log_texts(run) == ["before", "TypeError from stdout", "TypeError from stderr", "after"]
    assert_contiguous(run)
