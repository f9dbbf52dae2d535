"""run_command: run a subprocess and stream its stdout and stderr into the job's log.

Each of the child's pipes is read by its own thread with blocking reads, decoded as UTF-8
(bad bytes become U+FFFD), and written to a channel of the job's writer: lines appear in
the log as the child prints them. The child runs in its own session, so a cancel or a
timeout kills it together with anything it started.
"""

from __future__ import annotations

import codecs
import os
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from jobs.choices import LogStream
from jobs.logstore.writer import Channel, LogWriter
from jobs.running.control import current_context, signal_process_group

#: Bytes per read from a child's pipe.
READ_SIZE = 65536
#: Seconds to wait for a killed child's pipes to close (a process that left the group
#: could keep them open; its reader thread is then left behind).
AFTER_KILL_GRACE = 5.0

Command = Sequence[str | os.PathLike[str]]


def run_command(
    args: Command,
    *,
    cwd: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = False,
    timeout: float | None = None,
    echo: bool = True,
) -> int:
    """Run `args` (no shell) and return its exit code.

    With `check=True` a non-zero exit raises subprocess.CalledProcessError; after
    `timeout` seconds the child is killed and subprocess.TimeoutExpired is raised. With
    `echo`, the command line is logged first as a system line ("$ ..."), and how it ended
    last (its exit code, the signal that killed it, or its timeout, and its duration).
    Outside a job the child simply inherits this process's stdout and stderr.
    """
    child_env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
    context = current_context()
    if context is None:
        return _finish(subprocess.run(args, cwd=cwd, env=child_env, timeout=timeout).returncode, args, check)

    writer = context.writer
    if echo:
        writer.write_system(f"$ {shlex.join(str(arg) for arg in args)}")
    process = subprocess.Popen(
        args,
        cwd=cwd,
        env=child_env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group: cancel kills the whole tree
    )
    started = time.monotonic()
    context.track_process(process)
    readers = [
        _start_reader(process.stdout, writer, Channel(LogStream.STDOUT)),
        _start_reader(process.stderr, writer, Channel(LogStream.STDERR)),
    ]
    deadline = None if timeout is None else started + timeout
    try:
        returncode = process.wait(timeout=timeout)
        # The output is complete when the pipes close, which a grandchild may delay.
        for reader in readers:
            reader.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        if any(reader.is_alive() for reader in readers):
            raise subprocess.TimeoutExpired(list(map(str, args)), timeout or 0)
    except subprocess.TimeoutExpired:
        signal_process_group(process, signal.SIGKILL)
        process.wait()
        for reader in readers:
            reader.join(AFTER_KILL_GRACE)  # the pipes close once the whole group is dead
        if echo:
            writer.write_system(_ending(args, f"timed out after {timeout:g} s and was killed", started))
        raise
    finally:
        context.untrack_process(process)
    if echo:
        writer.write_system(_ending(args, _how_it_ended(returncode), started))
    context.raise_if_cancelled()
    return _finish(returncode, args, check)


def _how_it_ended(returncode: int) -> str:
    if returncode >= 0:
        return f"exited with code {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    return f"was killed by {name}"


def _ending(args: Command, how: str, started: float) -> str:
    """The system line that ends a command's output, e.g. "Command ['ls', '-l'] exited with
    code 0 in 0.2 s." (the command as CalledProcessError shows it)."""
    return f"Command {[str(arg) for arg in args]} {how} in {time.monotonic() - started:.1f} s."


def _finish(returncode: int, args: Command, check: bool) -> int:
    if check and returncode != 0:
        raise subprocess.CalledProcessError(returncode, [str(arg) for arg in args])
    return returncode


def _start_reader(pipe: object, writer: LogWriter, channel: Channel) -> threading.Thread:
    reader = threading.Thread(target=_pump, args=(pipe, writer, channel), name="runlog-pipe", daemon=True)
    reader.start()
    return reader


def _pump(pipe: object, writer: LogWriter, channel: Channel) -> None:
    """Copy a pipe into a channel until EOF. Blocking reads: this thread sleeps in read()."""
    fd = pipe.fileno()  # type: ignore[attr-defined]
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    try:
        while chunk := os.read(fd, READ_SIZE):
            text = decoder.decode(chunk)
            if text:
                writer.write_forced(channel, text)
        tail = decoder.decode(b"", final=True)
        if tail:
            writer.write_forced(channel, tail)
    finally:
        pipe.close()  # type: ignore[attr-defined]
        writer.end_channel(channel)
