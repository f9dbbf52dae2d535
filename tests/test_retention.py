"""Retention: `manage.py prunejobs` and RUNLOG_RETENTION delete old finished runs and their
lines, in small transactions, and never touch a run that is still going."""

from __future__ import annotations

import threading
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings
from django.utils import timezone

from jobs.models import Job, JobStatus, LogLine
from jobs.retention import expired, prune
from jobs.running.supervisor import apply_retention
from tests.conftest import LocalRuns, assert_contiguous, log_texts, store_lines, wait_finished

pytestmark = pytest.mark.django_db(transaction=True)


def finished_run(name: str, status: str, days_ago: float, lines: int = 3) -> Job:
    ended = timezone.now() - timedelta(days=days_ago)
    job = Job.objects.create(name=name, status=status, started_at=ended, finished_at=ended)
    store_lines(job, 1, lines)
    return job


def remaining() -> set[str]:
    return set(Job.objects.values_list("name", flat=True))


def prunejobs(*args: str) -> str:
    out = StringIO()
    call_command("prunejobs", *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def runs() -> dict[str, Job]:
    return {
        "old-failed": finished_run("old.failed", JobStatus.FAILED, 100),
        "old-ok": finished_run("old.ok", JobStatus.SUCCEEDED, 100, lines=25),
        "old-lost": finished_run("old.lost", JobStatus.LOST, 95),
        "recent": finished_run("recent", JobStatus.SUCCEEDED, 10),
        "running": Job.objects.create(
            name="still.running", status=JobStatus.RUNNING, started_at=timezone.now() - timedelta(days=200)
        ),
        "queued": Job.objects.create(
            name="still.queued", status=JobStatus.QUEUED, created_at=timezone.now() - timedelta(days=200)
        ),
    }


def test_prunejobs_deletes_old_finished_runs_and_their_lines(runs: dict[str, Job]) -> None:
    output = prunejobs("--older-than", "90d")

    assert output.strip() == "Removed 3 run(s) and 31 line(s) older than 90d."
    assert remaining() == {"recent", "still.running", "still.queued"}
    assert not LogLine.objects.filter(
        job_id__in=[runs[key].pk for key in ("old-failed", "old-ok", "old-lost")]
    ).exists()
    assert log_texts(runs["recent"]) == ["line 1", "line 2", "line 3"]


def test_prunejobs_filters_by_status_and_name(runs: dict[str, Job]) -> None:
    assert "Removed 2 run(s)" in prunejobs("--older-than", "90d", "--status", "failed,lost")
    assert remaining() == {"old.ok", "recent", "still.running", "still.queued"}
    assert "Removed 0 run(s)" in prunejobs("--older-than", "90d", "--name", "recent")
    assert "Removed 1 run(s)" in prunejobs("--older-than", "1d", "--name", "recent", "--name", "nothing.else")
    assert remaining() == {"old.ok", "still.running", "still.queued"}


def test_a_dry_run_counts_and_removes_nothing(runs: dict[str, Job]) -> None:
    before = LogLine.objects.count()
    assert prunejobs("--older-than", "90d", "--dry-run").strip() == (
        "Would remove 3 run(s) and 31 line(s) older than 90d."
    )
    assert LogLine.objects.count() == before
    assert len(remaining()) == 6


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--older-than", "90"], "An age is a number and a unit"),
        (["--older-than=-3d"], "An age is a number and a unit"),
        (["--older-than", "90d", "--status", "running"], "Statuses are among"),
        (["--older-than", "90d", "--status", ","], "Statuses are among"),
    ],
)
def test_bad_arguments_are_clear_errors_and_delete_nothing(runs: dict[str, Job], args: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        prunejobs(*args)
    assert len(remaining()) == 6


def test_the_supervisor_applies_runlog_retention(runs: dict[str, Job]) -> None:
    apply_retention()  # unset: keep forever
    assert len(remaining()) == 6
    with override_settings(RUNLOG_RETENTION="30d"):
        apply_retention()
    assert remaining() == {"recent", "still.running", "still.queued"}


@pytest.mark.slow
def test_a_run_keeps_storing_lines_while_a_large_one_is_pruned(local_runs: LocalRuns) -> None:
    big = finished_run("old.big", JobStatus.SUCCEEDED, 100, lines=20_000)
    running = local_runs.launch("demo.flood", lines=20_000, width=40)
    pruning = threading.Thread(target=lambda: prune(expired(timedelta(days=90)), batch=500))
    pruning.start()
    wait_finished(running)
    pruning.join()

    assert not Job.objects.filter(pk=big.pk).exists()
    assert not LogLine.objects.filter(job_id=big.pk).exists()
    assert running.status == JobStatus.SUCCEEDED
    assert running.line_count == 20_000
    assert_contiguous(running)


def test_pruning_never_deletes_a_run_that_is_not_finished() -> None:
    running = Job.objects.create(name="r", status=JobStatus.RUNNING, finished_at=timezone.now() - timedelta(days=400))
    store_lines(running, 1, 5)
    assert prune(Job.objects.all()).runs == 0
    assert log_texts(running) == [f"line {n}" for n in range(1, 6)]
