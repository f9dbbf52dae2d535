"""Per-thread capture of sys.stdout, sys.stderr and logging into the running job's log.

sys.stdout and sys.stderr are replaced, once, by `StreamRouter`s. A router is a
`threading.local`: its `write` attribute is resolved per thread at C speed. In a thread
that runs no job it *is* the original stream's `write` (so such threads pay nothing); in
a job's thread it is the job writer's `write_stdout`/`write_stderr`. Likewise its `buffer`
is the original stream's buffer, or in a job's thread a `JobBinaryStream` that decodes the
bytes written to it into the same log.

Threads a job starts (threading.Thread, ThreadPoolExecutor workers created by the job)
inherit its capture: `Thread.start` is wrapped to note the starting thread's job on the
new thread. Subprocesses write to file descriptors, not to sys.stdout; run them with
`jobs.run_command` to capture them.
"""

from __future__ import annotations

import codecs
import io
import logging
import sys
import threading
from typing import IO, TYPE_CHECKING, Any

from jobs.running.control import JobContext

if TYPE_CHECKING:
    from jobs.logstore.writer import Channel, LogWriter


class _ThreadState(threading.local):
    """The job this thread writes to. A new thread starts with its starter's job."""

    def __init__(self) -> None:
        self.context: JobContext | None = getattr(threading.current_thread(), "_runlog_context", None)


_state = _ThreadState()
_originals: dict[str, IO[str]] = {}


def thread_context() -> JobContext | None:
    context = _state.context
    if context is not None and context.writer.done.is_set():
        return None  # the job has ended; a thread it left behind writes to the process
    return context


def original_stream(stream: str) -> IO[str]:
    """The process's own stdout or stderr (for "stdout" or anything else)."""
    name = "stdout" if stream == "stdout" else "stderr"
    return _originals.get(name) or getattr(sys, f"__{name}__")


class StreamRouter(threading.local):
    """sys.stdout / sys.stderr: the job's log in job threads, the original stream elsewhere."""

    def __init__(self, name: str, original: IO[str]) -> None:
        # Runs once in every thread that uses the router.
        self._name = name
        self._original = original
        self.route(thread_context())

    def route(self, context: JobContext | None) -> None:
        """Send this thread's writes to the context's log, or to the original stream."""
        binary = vars(self).pop("buffer", None)  # this thread's own attributes
        if binary is not None:
            binary.close()  # its last incomplete character, if any, as U+FFFD
        if context is None:
            self.write = self._original.write
            self.flush = self._original.flush
        else:
            writer = context.writer
            self.write = writer.write_stdout if self._name == "stdout" else writer.write_stderr
            self.flush = _nothing_to_flush
            self.buffer = JobBinaryStream(writer, writer.stdout if self._name == "stdout" else writer.stderr)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def isatty(self) -> bool:
        return thread_context() is None and self._original.isatty()

    def __getattr__(self, name: str) -> Any:
        # encoding, errors, fileno, buffer, ...: the original stream's.
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._original, name)


def _nothing_to_flush() -> None:
    """The writer is always flushed by the flusher thread; flush() has nothing to do."""


class JobBinaryStream(io.BufferedIOBase):
    """sys.stdout.buffer or sys.stderr.buffer in a job's thread: bytes decoded as UTF-8 (bad
    bytes as U+FFFD) into the job's stdout or stderr, which splits them into lines like text.
    The decoder holds a character split across writes until its last byte comes; closing
    the stream (when the thread's job ends) stores an incomplete one as U+FFFD."""

    def __init__(self, writer: LogWriter, channel: Channel) -> None:
        super().__init__()
        self._writer = writer
        self._channel = channel
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        # A stream may be handed to other threads of the job: the decoder's state is shared.
        self._lock = threading.Lock()

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        if self.closed:
            raise ValueError("write to closed file")
        if isinstance(data, str):
            raise TypeError("a bytes-like object is required, not 'str'")
        with memoryview(data) as view:  # a TypeError for what is not bytes-like, as a real buffer
            size = view.nbytes
            with self._lock:
                text = self._decoder.decode(view.tobytes())
        if text:
            self._writer.write(self._channel, text)  # as text: cancel and backpressure apply
        return size

    def close(self) -> None:
        if not self.closed:
            with self._lock:
                tail = self._decoder.decode(b"", final=True)
            if tail:
                self._writer.write_forced(self._channel, tail)  # never interrupted: the job is ending
        super().close()


def install() -> None:
    """Route sys.stdout and sys.stderr through routers. Idempotent; called at start-up
    and again before each run, in case something replaced the streams in between."""
    for name in ("stdout", "stderr"):
        current = getattr(sys, name)
        if not isinstance(current, StreamRouter):
            _originals[name] = current
            setattr(sys, name, StreamRouter(name, current))
    if not getattr(threading.Thread.start, "_runlog_wrapped", False):
        threading.Thread.start = _inheriting_start  # type: ignore[method-assign]
    root = logging.getLogger()
    if not any(isinstance(handler, JobLogHandler) for handler in root.handlers):
        root.addHandler(JobLogHandler())


def bind(context: JobContext | None) -> None:
    """Make the calling thread write to `context`'s log (or, with None, to the process)."""
    install()
    _state.context = context
    for name in ("stdout", "stderr"):
        router = getattr(sys, name)
        if isinstance(router, StreamRouter):
            router.route(context)


_original_start = threading.Thread.start


def _inheriting_start(self: threading.Thread) -> None:
    context = _state.context
    if context is not None:
        self._runlog_context = context  # type: ignore[attr-defined]
    _original_start(self)


_inheriting_start._runlog_wrapped = True  # type: ignore[attr-defined]


class JobLogHandler(logging.Handler):
    """Sends records emitted by a job's threads to that job's log (stream "log")."""

    def __init__(self) -> None:
        super().__init__(level=logging.NOTSET)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        context = thread_context()
        if context is None:
            return
        try:
            context.writer.write_record(self.format(record))
        except Exception:
            self.handleError(record)


class NotFromAJobFilter(logging.Filter):
    """For console handlers: leave out records that already went to a job's log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return thread_context() is None
