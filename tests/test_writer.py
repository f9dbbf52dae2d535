"""The log writer on its own, without a database or a flusher thread.

The tests play the flusher: a `Wakes` object stands in for its wake-up queue, and the test
calls `writer.drain()` where the flusher would. What they check is what a user sees in the
stored log: which lines come out of a stream of writes, in which order, on which stream,
and that a job writing faster than the log is stored waits instead of filling memory.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator

import pytest
from django.test import override_settings

from jobs.choices import LogStream
from jobs.logstore.writer import CHUNK_CHARS, Channel, LogWriter
from jobs.running.control import JobCancelled, JobContext

Segments = list[tuple[str, list[str]]]

#: Long enough for every line of these tests unless a test says otherwise.
MAX_LENGTH = 32_768
#: How long to wait for something that should happen at once (a generous upper bound,
#: never a pause that the test relies on).
PATIENCE = 10.0


class Wakes:
    """Stands in for the flusher's wake-up queue: lets a test wait for the next wake-up,
    or for the one a writer sends just before it blocks on its full buffer. A writer wakes
    the flusher once until its next drain, and again only when a thread of it is about to
    wait for room: the tests that wait for `full` drain nothing before it."""

    def __init__(self) -> None:
        self.woken = threading.Event()
        self.full = threading.Event()

    def __call__(self, writer: LogWriter) -> None:
        if self.woken.is_set():
            self.full.set()
        self.woken.set()


def new_writer() -> tuple[LogWriter, Wakes]:
    wakes = Wakes()
    return LogWriter(uuid.uuid4(), wakes), wakes


def flat(segments: Segments) -> list[tuple[str, str]]:
    return [(stream, text) for stream, lines in segments for text in lines]


def texts(segments: Segments) -> list[str]:
    return [text for _, lines in segments for text in lines]


def close_and_drain(writer: LogWriter, wakes: Wakes, max_length: int = MAX_LENGTH) -> Segments:
    """Close the writer as the runner does, and drain its last batch as the flusher does.
    close() waits until the flusher has stored that batch, hence the thread."""
    wakes.woken.clear()
    closer = threading.Thread(target=writer.close, daemon=True)
    closer.start()
    assert wakes.woken.wait(PATIENCE)  # close() has queued its end marker and woken us
    segments, closed = writer.drain(max_length)
    assert closed
    writer.done.set()  # the flusher's "stored": close() returns
    closer.join(PATIENCE)
    assert not closer.is_alive()
    return segments


def write_each(pieces: list[str], how: str, max_length: int = MAX_LENGTH) -> list[tuple[str, str]]:
    """Write `pieces` in order and return every stored line (closing at the end).

    how: "together" drains once, so the flusher sees all writes in one batch; "apart"
    drains after every write, so each piece reaches the line splitter on its own, as
    when the flusher happens to drain between two writes; "stderr" writes to stderr,
    whose writes are always split one by one.
    """
    writer, wakes = new_writer()
    segments: Segments = []
    for piece in pieces:
        if how == "stderr":
            writer.write_stderr(piece)
        else:
            writer.write_stdout(piece)
        if how == "apart":
            segments += writer.drain(max_length)[0]
    segments += close_and_drain(writer, wakes, max_length)
    return flat(segments)


def drain_until_finished(writer: LogWriter, wakes: Wakes, thread: threading.Thread, max_length: int) -> Segments:
    """Play the flusher for a writing thread: drain whenever woken, until the thread ends.
    The thread's target must set `wakes.woken` when it returns."""
    segments: Segments = []
    while thread.is_alive():
        assert wakes.woken.wait(PATIENCE), "the writer neither woke the flusher nor finished"
        wakes.woken.clear()
        segments += writer.drain(max_length)[0]
    thread.join()
    segments += writer.drain(max_length)[0]
    return segments


def start_writing(wakes: Wakes, write: Callable[[], None]) -> threading.Thread:
    """Run `write` in a thread (a job thread); its end wakes the test's drain loop."""

    def target() -> None:
        try:
            write()
        finally:
            wakes.woken.set()

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


@pytest.fixture
def small_buffer() -> Iterator[int]:
    """A writer buffer of a few chunks, so that backpressure shows at once."""
    limit = 4
    with override_settings(RUNLOG_WRITER_BUFFER=limit):
        yield limit


# --- Lines -----------------------------------------------------------------------------------


def test_partial_line_waits_for_its_newline() -> None:
    writer, _ = new_writer()
    writer.write_stdout("Downloading... ")
    assert writer.drain(MAX_LENGTH)[0] == []  # nothing to store before the line ends
    writer.write_stdout("done")
    writer.write_stdout("\nnext")
    assert flat(writer.drain(MAX_LENGTH)[0]) == [("stdout", "Downloading... done")]


def test_unfinished_lines_are_stored_when_the_writer_closes() -> None:
    writer, wakes = new_writer()
    writer.write_stdout("first\nno newline at the end")
    writer.write_stderr("stderr without newline")
    assert flat(writer.drain(MAX_LENGTH)[0]) == [("stdout", "first")]
    assert flat(close_and_drain(writer, wakes)) == [
        ("stdout", "no newline at the end"),
        ("stderr", "stderr without newline"),
    ]


def test_ended_channel_stores_its_unfinished_line_without_waiting_for_close() -> None:
    # A subprocess that exits without a final newline: its last line must not wait for
    # the job's end, nor merge with what the job prints next.
    writer, _ = new_writer()
    child = Channel(LogStream.STDOUT)
    writer.write_forced(child, "child's last words")
    writer.end_channel(child)
    writer.write_stdout("job continues\n")
    assert texts(writer.drain(MAX_LENGTH)[0]) == ["child's last words", "job continues"]


def test_empty_lines_are_kept() -> None:
    assert [text for _, text in write_each(["a\n\n\nb\n", "\n"], "together")] == ["a", "", "", "b", ""]


# Each case: the writes, and the lines a terminal would have shown at the end.
CARRIAGE_RETURN_CASES = {
    "progress in one write": (["10%\r20%\r100%\n"], ["100%"]),
    "progress in separate writes": (["10%", "\r20%", "\r100%", "\n"], ["100%"]),
    "progress with trailing returns": (["10%\r", "20%\r", "100%\r", "\n"], ["100%"]),
    "crlf": (["one\r\ntwo\r\n"], ["one", "two"]),
    "crlf split between writes": (["one\r", "\ntwo\r", "\n"], ["one", "two"]),
    "overwrite then text after the newline": (["old\rnew\nnext", "\n"], ["new", "next"]),
    "return at the very end": (["done\r"], ["done"]),
    "progress ending without newline": (["1/3\r2/3", "\r3/3"], ["3/3"]),
}


@pytest.mark.parametrize("how", ["together", "apart", "stderr"])
@pytest.mark.parametrize("case", CARRIAGE_RETURN_CASES)
def test_carriage_return_keeps_the_last_state_of_the_line(case: str, how: str) -> None:
    # However the writes are batched, the stored log is what a terminal would show.
    pieces, expected = CARRIAGE_RETURN_CASES[case]
    assert [text for _, text in write_each(pieces, how)] == expected


@pytest.mark.parametrize("pieces", [["abc\r\r", "\n"], ["abc\r", "\r", "\n"], ["abc\r\r"]])
def test_repeated_carriage_returns_before_a_separate_newline_keep_the_text(pieces: list[str]) -> None:
    # "abc\r\r\n" in one write is stored as "abc"; the same bytes split across writes
    # (e.g. a Windows program's "\r\n" written through a text-mode stream) must be too.
    assert [text for _, text in write_each(["".join(pieces)], "together")] == ["abc"]
    assert [text for _, text in write_each(pieces, "apart")] == ["abc"]


def test_nul_and_lone_surrogates_become_replacement_characters() -> None:
    # PostgreSQL refuses NUL in text and no database driver can encode a lone surrogate
    # (from surrogateescape-decoded bytes, or half of a pair): both must still be stored.
    invalid_utf8 = b"bad \xff\xfe byte".decode("utf-8", "surrogateescape")
    writer, _ = new_writer()
    writer.write_stdout("nul\x00inside\n")
    writer.write_stdout(invalid_utf8 + "\n")
    writer.write_stderr("half \ud83d of a pair\n")
    writer.write_stdout("caf\u00e9 \U0001f600 kept\n")  # valid non-ASCII text is untouched
    lines = flat(writer.drain(MAX_LENGTH)[0])
    assert lines == [
        ("stdout", "nul\ufffdinside"),
        ("stdout", "bad \ufffd\ufffd byte"),
        ("stderr", "half \ufffd of a pair"),
        ("stdout", "caf\u00e9 \U0001f600 kept"),
    ]
    for _, text in lines:
        text.encode("utf-8")  # storable: raises on any surrogate left


# --- Long lines ----------------------------------------------------------------------------------


def _numbered_text(length: int) -> str:
    """Text in which every position differs from its neighbours, so that a lost, repeated
    or reordered piece changes the concatenation."""
    return "".join(chr(ord("A") + index % 26) for index in range(length))


@pytest.mark.parametrize(
    "split",
    [
        pytest.param(lambda line: [line + "\nafter\n"], id="one write"),
        pytest.param(lambda line: [line[i : i + 7] for i in range(0, len(line), 7)] + ["\nafter\n"], id="small writes"),
        pytest.param(lambda line: [line, "\n", "after\n"], id="newline in its own write"),
    ],
)
@pytest.mark.parametrize("how", ["together", "apart", "stderr"])
def test_long_line_is_wrapped_with_no_character_lost(split: Callable[[str], list[str]], how: str) -> None:
    max_length = 100
    line = _numbered_text(1_050)
    stored = [text for _, text in write_each(split(line), how, max_length)]
    assert stored[-1] == "after"  # the line after it is intact
    pieces = stored[:-1]
    assert "".join(pieces) == line
    assert all(len(piece) == max_length for piece in pieces[:-1])
    assert len(pieces) == 11


@pytest.mark.parametrize("length", [100, 200])
@pytest.mark.parametrize("how", ["together", "apart"])
def test_line_of_a_multiple_of_max_length_adds_no_empty_line(length: int, how: str) -> None:
    line = _numbered_text(length)
    stored = [text for _, text in write_each([line, "\n", "after\n"], how, max_length=100)]
    assert stored == [line[i : i + 100] for i in range(0, length, 100)] + ["after"]


@pytest.mark.parametrize(
    "pieces",
    [["0123456789\r", "\n", "after\n"], ["0123456789", "\r", "\n", "after\n"], ["0123456789", "\r"]],
)
def test_max_length_line_ending_in_a_split_crlf_adds_no_empty_line(pieces: list[str]) -> None:
    # Subprocess output is fed in pieces of its pipe reads, so "\r" and "\n" can arrive apart.
    expected = ["0123456789", "after"] if "after\n" in pieces else ["0123456789"]
    assert [text for _, text in write_each(["".join(pieces)], "together", max_length=10)] == expected
    assert [text for _, text in write_each(pieces, "apart", max_length=10)] == expected


def test_write_larger_than_a_chunk_is_split_so_the_buffer_bounds_memory(small_buffer: int) -> None:
    # One print() of a huge string must not sit in memory whole: it is cut into chunks of
    # at most CHUNK_CHARS, and the writing thread waits once the buffer holds `limit` of them.
    writer, wakes = new_writer()
    text = _numbered_text(10 * CHUNK_CHARS + 123) + "\n"
    thread = start_writing(wakes, lambda: writer.write_stdout(text))
    assert wakes.full.wait(PATIENCE)
    assert thread.is_alive()  # waiting for room inside its one write() call
    segments = drain_until_finished(writer, wakes, thread, max_length=len(text))
    assert texts(segments) == [text[:-1]]


# --- Backpressure and order ------------------------------------------------------------------------


def test_writer_blocks_on_a_full_buffer_and_resumes_after_drain(small_buffer: int) -> None:
    writer, wakes = new_writer()
    expected = [f"line {index}" for index in range(10)]

    def job() -> None:
        for line in expected:
            writer.write_stdout(line + "\n")

    thread = start_writing(wakes, job)
    assert wakes.full.wait(PATIENCE)
    assert thread.is_alive()
    # What it wrote before it waited: exactly a buffer's worth.
    first, _ = writer.drain(MAX_LENGTH)
    assert texts(first) == expected[:small_buffer]
    rest = drain_until_finished(writer, wakes, thread, MAX_LENGTH)
    assert texts(rest) == expected[small_buffer:]


def test_cancel_releases_a_thread_blocked_on_a_full_buffer(small_buffer: int) -> None:
    # Cancelling a job whose log is not being stored (database away) must not leave its
    # thread stuck in print(): it gets JobCancelled at once.
    writer, wakes = new_writer()
    writer.control = context = JobContext(writer.job_id, "tests.blocked", writer, timeout=None)
    raised: list[BaseException] = []

    def write_until_cancelled() -> None:
        try:
            for index in range(100):
                writer.write_stdout(f"{index}\n")
        except JobCancelled as exc:
            raised.append(exc)

    thread = start_writing(wakes, write_until_cancelled)
    assert wakes.full.wait(PATIENCE)
    assert thread.is_alive()
    context.cancel()
    thread.join(PATIENCE)
    assert not thread.is_alive()
    assert len(raised) == 1


def test_a_cancelled_thread_that_keeps_writing_still_waits_for_room(small_buffer: int) -> None:
    # After its one JobCancelled, a thread (e.g. in a `finally:` block) may print on; it
    # must still block on a full buffer, or memory would grow without bound.
    writer, wakes = new_writer()
    writer.control = context = JobContext(writer.job_id, "tests.blocked", writer, timeout=None)
    context.cancel()

    def write_after_cancel() -> None:
        try:
            writer.write_stdout("first\n")
        except JobCancelled:
            pass
        for index in range(100):
            writer.write_stdout(f"{index}\n")

    thread = start_writing(wakes, write_after_cancel)
    assert wakes.full.wait(PATIENCE)
    assert thread.is_alive()
    first, _ = writer.drain(MAX_LENGTH)
    assert [text for stream, text in flat(first) if stream == LogStream.STDOUT] == [str(i) for i in range(small_buffer)]
    rest = drain_until_finished(writer, wakes, thread, MAX_LENGTH)
    assert texts(rest) == [str(index) for index in range(small_buffer, 100)]


def test_stdout_and_stderr_keep_separate_unfinished_lines() -> None:
    writer, _ = new_writer()
    writer.write_stdout("out: ")
    writer.write_stderr("err: ")
    writer.write_stdout("half")
    writer.write_stderr("warning")
    writer.write_stdout(" done\n")
    writer.write_stderr("!\n")
    assert flat(writer.drain(MAX_LENGTH)[0]) == [("stdout", "out: half done"), ("stderr", "err: warning!")]


def test_lines_keep_their_order_across_channels() -> None:
    writer, wakes = new_writer()
    child = Channel(LogStream.STDOUT)  # a subprocess's stdout, separate from the job's
    writer.write_stdout("job 1\n")
    writer.write_stderr("job error 1\n")
    writer.write_forced(child, "child 1\n")
    writer.write_record("WARNING demo: logged")
    writer.write_stdout("job 2\n")
    writer.write_system("system note")
    writer.write_stderr("job error 2\n")
    writer.write_stdout("job 3\n")
    assert flat(close_and_drain(writer, wakes)) == [
        ("stdout", "job 1"),
        ("stderr", "job error 1"),
        ("stdout", "child 1"),
        ("log", "WARNING demo: logged"),
        ("stdout", "job 2"),
        ("system", "system note"),
        ("stderr", "job error 2"),
        ("stdout", "job 3"),
    ]


def test_order_is_kept_when_lines_finish_across_channels() -> None:
    # A stdout line started before a stderr line but finished after it is stored when it
    # ends: a line's place in the log is where its newline was written.
    writer, _ = new_writer()
    writer.write_stdout("slow ")
    writer.write_stderr("quick\n")
    writer.write_stdout("line\n")
    assert flat(writer.drain(MAX_LENGTH)[0]) == [("stderr", "quick"), ("stdout", "slow line")]


def test_writes_after_close_do_not_reach_the_log() -> None:
    # A thread the job left behind keeps printing after the run ended: the finished log
    # (whose line count is final) must not grow.
    writer, wakes = new_writer()
    writer.write_stdout("in the log\n")
    assert texts(close_and_drain(writer, wakes)) == ["in the log"]
    writer.write_forced(writer.stderr, "after the end\n")
    writer.write_system("late note")
    assert writer.drain(MAX_LENGTH)[0] == []
