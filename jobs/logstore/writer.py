"""A job's log writer: takes its output, and hands it to the flusher as numbered lines.

The job's threads only append raw chunks to a deque (`write_stdout` is the hot path of
every print() in a job). The process's flusher thread (jobs.logstore.flusher) drains the deque,
splits chunks into lines here, numbers and stores them. Splitting in the flusher keeps
print() cheap and lets str.join/str.split work on whole batches.

Memory is bounded: a chunk is at most CHUNK_CHARS characters and a writer holds at most
WRITER_BUFFER chunks; a thread that writes more blocks until the flusher has drained them.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any, Protocol

from jobs.choices import LogStream
from jobs.conf import runlog_settings


class RunControl(Protocol):
    """What a writer needs from the run it writes for (jobs.running.control.JobContext)."""

    def raise_if_cancelled(self) -> None:
        """In a job's thread writing after the run was told to stop: raise, once per thread."""

    def storage_failed(self) -> None:
        """The run's lines cannot be stored any more: stop it."""

    def orphan_stream(self, stream: str) -> IO[str]:
        """Where output goes once the run has ended (a thread the job left behind)."""


#: Writes longer than this are cut into several chunks, so that the buffer's bound in
#: chunks is also a bound in memory.
CHUNK_CHARS = 4096

_SURROGATES = re.compile("[\ud800-\udfff]")


class Channel:
    """One source of text (the job's stdout, its stderr, one subprocess's stdout, ...).

    Each channel keeps its own partial line, so that a subprocess's unfinished line never
    merges with the job's own output. Only the flusher thread calls feed() and finish().
    """

    __slots__ = ("stream", "_partial")

    def __init__(self, stream: str) -> None:
        self.stream = stream
        self._partial = ""

    def feed(self, text: str, max_length: int, out: list[tuple[str, list[str]]]) -> None:
        text = _sanitize(text)
        if "\n" not in text:
            self._partial = _keep_last_overwrite(self._partial + text)
            self._wrap_partial(max_length, out)
            return
        lines = text.split("\n")
        lines[0] = self._partial + lines[0]
        partial = _keep_last_overwrite(lines.pop())
        if "\r" in text or "\r" in lines[0]:
            lines = [_apply_carriage_returns(line) for line in lines]
        if len(text) > max_length or len(lines[0]) > max_length:
            lines = _wrap_long_lines(lines, max_length)
        out.append((self.stream, lines))
        self._partial = partial
        self._wrap_partial(max_length, out)

    def finish(self, out: list[tuple[str, list[str]]]) -> None:
        """The source has ended: its unfinished line becomes the last line."""
        if self._partial:
            out.append((self.stream, [_apply_carriage_returns(self._partial)]))
            self._partial = ""

    def _wrap_partial(self, max_length: int, out: list[tuple[str, list[str]]]) -> None:
        """Store the full-length pieces of an over-long unfinished line, keeping the last
        piece (its line may end right there) and any trailing "\\r" (not text yet)."""
        partial = self._partial
        if len(partial) <= max_length:
            return
        body = len(partial.rstrip("\r"))
        if body <= max_length:
            return
        cut = body - body % max_length
        if cut == body:
            cut -= max_length
        out.append((self.stream, [partial[i : i + max_length] for i in range(0, cut, max_length)]))
        self._partial = partial[cut:]


def _sanitize(text: str) -> str:
    """Make text storable on every database: no NUL, no lone surrogates."""
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")  # PostgreSQL text refuses NUL
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = _SURROGATES.sub("\ufffd", text)
    return text


def _apply_carriage_returns(line: str) -> str:
    """A terminal shows only what follows the last carriage return ("\\r\\n" is a newline)."""
    line = line.rstrip("\r")
    return line[line.rfind("\r") + 1 :]


def _keep_last_overwrite(partial: str) -> str:
    """Drop progress updates an unfinished line has overwritten, keeping a trailing "\\r"
    (they may be the first half of a "\\r\\n")."""
    if "\r" not in partial:
        return partial
    end = len(partial.rstrip("\r"))
    return partial[partial.rfind("\r", 0, end) + 1 :]


def _wrap_long_lines(lines: list[str], max_length: int) -> list[str]:
    wrapped: list[str] = []
    for line in lines:
        if len(line) <= max_length:
            wrapped.append(line)
        else:
            wrapped.extend(line[i : i + max_length] for i in range(0, len(line), max_length))
    return wrapped


@dataclass
class Progress:
    done: float
    total: float | None
    message: str


@dataclass
class Batch:
    """Lines numbered by the flusher, ready to store and to publish."""

    job_id: uuid.UUID
    first_number: int
    segments: list[tuple[str, list[str]]]
    created_at: Any = None  # set by the flusher: one timestamp per drain
    line_count: int = 0  # the job's stored line count once this batch is stored
    progress: Progress | None = None
    finished: bool = False  # the writer's last batch
    updates: list[tuple[int, str]] = field(default_factory=list)  # (number, new text)
    #: Shared by the run's live viewers once published: its rows and encodings, made once.
    cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def __len__(self) -> int:
        return sum(len(lines) for _, lines in self.segments)

    def lines(self) -> list[tuple[int, str, str]]:
        """(number, stream, text) for each line, in order."""
        numbered = []
        number = self.first_number
        for stream, texts in self.segments:
            for text in texts:
                numbered.append((number, stream, text))
                number += 1
        return numbered


_CLOSE = object()


class LogWriter:
    """Collects one job's output. Thread-safe: every thread of the job writes here."""

    def __init__(self, job_id: uuid.UUID, wake_flusher: Callable[[LogWriter], None]) -> None:
        self.job_id = job_id
        self.control: RunControl | None = None
        self._wake_flusher = wake_flusher
        self._pending: deque[Any] = deque()
        self._limit = runlog_settings.WRITER_BUFFER
        self._room = threading.Condition()
        # True while the flusher has been woken and has not drained us yet.
        self._scheduled = False
        # Set when writes must leave the fast path: cancel requested, or writer closed.
        self._interrupted = False
        self._closed = False
        self.stdout = Channel(LogStream.STDOUT)
        self.stderr = Channel(LogStream.STDERR)
        self._records = Channel(LogStream.LOG)
        self.system = Channel(LogStream.SYSTEM)
        # Owned by the flusher thread.
        self.next_number = 1
        self.truncated_at: int | None = None
        self.dropped = 0
        self._progress: Progress | None = None
        self.progress_written_at = 0.0
        self.done = threading.Event()
        self.failure: str | None = None  # why storing this writer's lines failed, if it did

    # --- Called by the job's threads -------------------------------------------------------

    def write_stdout(self, text: str) -> int:
        """sys.stdout.write() in a job thread. Kept minimal: it is every print()'s cost."""
        if self._interrupted or len(text) > CHUNK_CHARS or type(text) is not str:
            return self._write_slow(self.stdout, text)
        pending = self._pending
        pending.append(text)  # a bare str means: the job's stdout channel
        if len(pending) >= self._limit:
            self._wait_for_room(interruptible=True)
        if not self._scheduled:
            self._schedule()
        return len(text)

    def write_stderr(self, text: str) -> int:
        return self.write(self.stderr, text)

    def write(self, channel: Channel, text: str) -> int:
        """Write to any channel of this job."""
        if self._interrupted or len(text) > CHUNK_CHARS or type(text) is not str:
            return self._write_slow(channel, text)
        self._append((channel, text), interruptible=True)
        return len(text)

    def write_record(self, line: str) -> None:
        """A formatted logging record; it may span several lines."""
        self.write_forced(self._records, line + "\n")

    def write_system(self, line: str) -> None:
        """A note from Runlog itself. Accepted even while the job is being stopped."""
        self.write_forced(self.system, line + "\n")

    def write_forced(self, channel: Channel, text: str) -> None:
        """Append without interrupting the caller with JobCancelled (subprocess readers,
        system notes)."""
        if self._closed:
            return
        for start in range(0, len(text), CHUNK_CHARS):
            self._append((channel, text[start : start + CHUNK_CHARS]))

    def end_channel(self, channel: Channel) -> None:
        """The channel's source ended: its unfinished line is stored as a line."""
        self._append((channel, None))

    def set_progress(self, done: float, total: float | None, message: str) -> None:
        self._progress = Progress(float(done), None if total is None else float(total), str(message)[:500])
        if not self._scheduled:
            self._schedule()

    def interrupt(self) -> None:
        """Send writes to the slow path, which raises JobCancelled once per thread."""
        self._interrupted = True
        self._wake_blocked_writers()

    def close(self) -> None:
        """Store every unfinished line and wait until all lines are stored."""
        # Closed first: if the flusher fails on this writer, it knows the end was asked.
        self._closed = True
        self._interrupted = True
        self._append(_CLOSE)
        self._schedule()
        self.done.wait()

    @property
    def closing(self) -> bool:
        return self._closed

    def _write_slow(self, channel: Channel, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        text = str.__str__(text)  # a plain str: e.g. Django's SafeString is a subclass
        if self._closed:
            # A thread the job started is still writing after the job ended: its text has
            # nowhere to go in the log, so it goes to the process's own stream.
            if self.control is None:
                return len(text)
            return self.control.orphan_stream(channel.stream).write(text)
        if self.control is not None:
            self.control.raise_if_cancelled()
        for start in range(0, len(text), CHUNK_CHARS):
            piece = text[start : start + CHUNK_CHARS]
            self._append(piece if channel is self.stdout else (channel, piece), interruptible=True)
        return len(text)

    def _append(self, chunk: Any, interruptible: bool = False) -> None:
        """Queue a chunk; block while the buffer is full. Only the job's own writes are
        `interruptible` (they may raise JobCancelled); pipe readers and notes never are."""
        self._pending.append(chunk)
        if len(self._pending) >= self._limit and chunk is not _CLOSE:
            self._wait_for_room(interruptible)
        if not self._scheduled:
            self._schedule()

    def _schedule(self) -> None:
        self._scheduled = True
        self._wake_flusher(self)

    def _wait_for_room(self, interruptible: bool) -> None:
        """Backpressure: block until the flusher has drained this writer. A cancel wakes
        the job's own threads to raise JobCancelled (once each); after that they wait too."""
        self._schedule()
        with self._room:
            while len(self._pending) >= self._limit and not self._closed:
                if interruptible and self._interrupted and self.control is not None:
                    self.control.raise_if_cancelled()
                self._room.wait()

    # --- Called by the flusher thread --------------------------------------------------------

    def drain(self, max_length: int) -> tuple[list[tuple[str, list[str]]], bool]:
        """Take everything written so far as lines: (segments, closed)."""
        self._scheduled = False
        pending = self._pending
        chunks = [pending.popleft() for _ in range(len(pending))]
        self._wake_blocked_writers()
        out: list[tuple[str, list[str]]] = []
        closed = False
        run: list[str] = []  # consecutive chunks of the job's stdout, split together
        for chunk in chunks:
            if type(chunk) is str:
                run.append(chunk)
                continue
            if run:
                self.stdout.feed("".join(run), max_length, out)
                run = []
            if chunk is _CLOSE:
                closed = True
                for channel in (self.stdout, self.stderr, self._records, self.system):
                    channel.finish(out)
                continue
            channel, text = chunk
            if text is None:
                channel.finish(out)
            else:
                channel.feed(text, max_length, out)
        if run:
            self.stdout.feed("".join(run), max_length, out)
        return out, closed

    def _wake_blocked_writers(self) -> None:
        with self._room:
            self._room.notify_all()

    def take_progress(self) -> Progress | None:
        progress, self._progress = self._progress, None
        return progress

    def has_progress(self) -> bool:
        return self._progress is not None
