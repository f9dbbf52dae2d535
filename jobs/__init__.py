"""Runlog: run registered jobs and keep every line they write.

    from jobs import job, run_command, section

    @job("reports.rebuild", title="Rebuild reports")
    def rebuild(year: int, dry_run: bool = False):
        print("starting")
        with section("Dump"):
            run_command(["pg_dump", "..."])

Import what you need from here; the submodules are internals.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from jobs.params import InvalidParameters
from jobs.registry import UnknownJob, job, unregister
from jobs.running.api import checkpoint, progress, section, sleep
from jobs.running.control import JobCancelled
from jobs.running.processes import run_command

if TYPE_CHECKING:
    from jobs.models import Job

__all__ = [
    "InvalidParameters",
    "JobCancelled",
    "UnknownJob",
    "checkpoint",
    "job",
    "launch",
    "progress",
    "run_command",
    "section",
    "sleep",
    "unregister",
]


def launch(name: str, *, user: Any = None, **params: Any) -> Job:
    """Validate `params`, create a queued run of job `name` and start it in this process
    once the current transaction commits. See jobs.launcher.launch."""
    from jobs.launcher import launch as launch_run  # the models need the app registry

    return launch_run(name, user=user, **params)
