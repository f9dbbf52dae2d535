"""The calls a job makes to cooperate with Runlog: stop points and progress."""

from __future__ import annotations

import threading

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
