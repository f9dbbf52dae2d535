"""The facts the job page keeps current while a run goes on (its times and its duration) are
written as the server writes them: what the page shows live is what a reload of the page
shows, in the server's time zone, and the duration is jobs.display.format_duration's."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from jobs.display import format_duration
from jobs.logstore.notify import announce
from jobs.models import Job, JobStatus
from tests import test_browser
from tests.conftest import LiveServer, running_run, start_gunicorn, stop_server
from tests.test_browser import START, expect, open_job

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow, pytest.mark.xdist_group("test_browser_facts")]

# test_browser's Chromium and signed-in page (pytest finds a fixture by its name here), on
# this module's server.
browser, page, server = test_browser.browser, test_browser.page, test_browser.server

#: Durations of each form: seconds (a tie, which Python rounds to the even tenth), minutes, hours.
DURATIONS = [timedelta(seconds=4.25), timedelta(seconds=185), timedelta(hours=2, minutes=3, seconds=0.5)]
FACTS = ["time[data-field=started_at]", "time[data-field=finished_at]", "#duration"]


@pytest.fixture
def live_server_gunicorn(subprocess_env: dict[str, str], tmp_path: Path) -> Iterator[LiveServer]:
    """The project's gunicorn in a time zone with minutes in its offset (+05:30)."""
    server = start_gunicorn({**subprocess_env, "TIME_ZONE": "Asia/Kolkata"}, tmp_path / "gunicorn.log")
    yield server
    stop_server(server)


def test_live_times_and_durations_are_written_as_the_server_writes_them(page: Any, server: LiveServer) -> None:
    for duration in DURATIONS:
        job = running_run()
        open_job(page, server, job)
        expect(page.locator("#live")).to_have_text("Live")
        # The run ends, as its process records and announces it; the page learns it live.
        Job.objects.filter(pk=job.pk).update(status=JobStatus.SUCCEEDED, started_at=START, finished_at=START + duration)
        announce(job.id, 0)
        expect(page.locator("#status-badge")).to_have_text("Succeeded")
        live = [page.inner_text(fact) for fact in FACTS]
        assert live[2] == format_duration(duration)
        page.reload()
        assert [page.inner_text(fact) for fact in FACTS] == live
        assert live[0] == "2026-01-02 08:34:05 +0530"
