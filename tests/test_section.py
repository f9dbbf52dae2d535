"""jobs.section: a block's output between `::group::<title>` and `::endgroup::` lines, which
the job page shows as a collapsible section."""

from __future__ import annotations

import threading

import pytest

import jobs
from jobs import job, section
from jobs.models import JobStatus, LogStream
from jobs.running.runner import get_runner
from tests.conftest import WAIT, assert_contiguous, log_texts, run_now, wait_finished, wait_for
from tests.test_capture import lines_of

pytestmark = pytest.mark.django_db(transaction=True)

#: Released by the test once it has cancelled the run (see `computing_when_cancelled`).
_cancel_seen: dict[str, threading.Event] = {}


@job("section_tests.nested")
def nested_job() -> None:
    print("before")
    with section("Build"):
        print("building")
        with section("Tests\nand a second line\r\nand a third"):
            print("testing")
    print("after")


@job("section_tests.raises")
def raising_job() -> None:
    with section("Fails"):
        print("about to fail")
        raise ValueError("broken inside the section")


@job("section_tests.sleeps")
def sleeping_job() -> None:
    with section("Waits"):
        print("waiting")
        jobs.sleep(WAIT)


@job("section_tests.computes")
def computing_when_cancelled(token: str) -> None:
    """Its block ends normally after the cancel, in code that never checks for one: the
    section still closes, and the job stops at its next print."""
    with section("Computes"):
        print("computing")
        if not _cancel_seen[token].wait(WAIT):
            raise TimeoutError("the test never cancelled the run")
    print("never stored")


def test_sections_nest_and_a_title_is_one_line() -> None:
    run = run_now("section_tests.nested")
    assert run.status == JobStatus.SUCCEEDED, run.error
    assert lines_of(run) == [
        (LogStream.STDOUT, "before"),
        (LogStream.STDOUT, "::group::Build"),
        (LogStream.STDOUT, "building"),
        (LogStream.STDOUT, "::group::Tests and a second line and a third"),
        (LogStream.STDOUT, "testing"),
        (LogStream.STDOUT, "::endgroup::"),
        (LogStream.STDOUT, "::endgroup::"),
        (LogStream.STDOUT, "after"),
    ]
    assert_contiguous(run)


def test_a_section_ends_when_its_block_raises_and_the_exception_goes_on() -> None:
    run = run_now("section_tests.raises")
    assert run.status == JobStatus.FAILED
    assert run.error == "ValueError: broken inside the section"
    texts = log_texts(run)
    assert texts[:3] == ["::group::Fails", "about to fail", "::endgroup::"]
    assert texts[3] == "Traceback (most recent call last):"  # the job's failure, after the section
    assert texts[-1] == "ValueError: broken inside the section"


def test_a_section_ends_when_its_block_is_cancelled() -> None:
    run = jobs.launch("section_tests.sleeps")
    wait_for(lambda: "waiting" in log_texts(run), "the job to wait in its section")
    get_runner().cancel(run.id)
    wait_finished(run)
    assert run.status == JobStatus.CANCELLED
    assert log_texts(run) == ["::group::Waits", "waiting", "::endgroup::", "Cancelled on request."]


def test_a_section_whose_block_ends_after_a_cancel_still_closes() -> None:
    token = "computes"
    _cancel_seen[token] = threading.Event()
    run = jobs.launch("section_tests.computes", token=token)
    try:
        wait_for(lambda: "computing" in log_texts(run), "the job to compute in its section")
        get_runner().cancel(run.id)
    finally:
        _cancel_seen[token].set()
    wait_finished(run)
    assert run.status == JobStatus.CANCELLED
    assert log_texts(run) == ["::group::Computes", "computing", "::endgroup::", "Cancelled on request."]


def test_outside_a_job_the_markers_go_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(KeyError), section("Outside\r\n"):
        print("inside")
        raise KeyError("x")
    assert capsys.readouterr().out == "::group::Outside \ninside\n::endgroup::\n"
