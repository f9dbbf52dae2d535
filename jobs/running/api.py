"""The calls a job makes to cooperate with Runlog: stop points, progress and sections."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from jobs.running.capture import thread_context


def checkpoint() -> None:
    """Stop here if the current job was cancelled. A no-op outside a job."""
    context = thread_context()
    if context is not None:
        context.raise_if_cancelled()


def sleep(seconds: float) -> None:
    """time.sleep() that ends early, raising JobCancelled, when the job is cancelled."""
    context = thread_context()
    if context is None:
        threading.Event().wait(seconds)
    else:
        context.raise_if_cancelled()
        context.wait(seconds)


def progress(done: float, total: float | None = None, message: str = "") -> None:
    """Record how far the current job is; the job page shows it. Cheap to call often."""
    context = thread_context()
    if context is not None:
        context.writer.set_progress(done, total, message)
        context.raise_if_cancelled()


_LINE_BREAKS = re.compile(r"[\r\n]+")


@contextmanager
def section(title: str) -> Iterator[None]:
    """Show the block's output as a collapsible section named `title` on the job page: a
    line `::group::<title>` before it and `::endgroup::` after it (GitHub Actions' markers),
    also when the block raises; its exception goes on. A title is made one line."""
    _write_marker(f"::group::{_LINE_BREAKS.sub(' ', str(title))}")
    try:
        yield
    finally:
        _write_marker("::endgroup::")


def _write_marker(line: str) -> None:
    """On the job's stdout, even while the job is being stopped (a print then raises
    JobCancelled instead), so that a section always ends where its block did."""
    context = thread_context()
    if context is None:
        print(line)
    else:
        context.writer.write_forced(context.writer.stdout, line + "\n")
