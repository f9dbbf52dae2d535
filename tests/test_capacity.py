"""Viewer capacity: live streams past a process's RUNLOG_MAX_STREAMS are refused with 503 and
Retry-After, the streams ended give their places back, and pages answer whatever the
streams."""

from __future__ import annotations

import pytest
from django.test import Client, override_settings

from jobs.streaming import capacity
from tests.conftest import running_run

pytestmark = pytest.mark.django_db(transaction=True)


@override_settings(RUNLOG_MAX_STREAMS=1, RUNLOG_STREAM_RETRY_AFTER=7)
def test_a_stream_past_the_limit_gets_503_with_retry_after_until_a_place_is_free(admin_client: Client) -> None:
    job = running_run()
    first = admin_client.get(f"/jobs/{job.id}/events")
    assert first.status_code == 200
    for url in (f"/jobs/{job.id}/events", f"/jobs/{job.id}/log.txt?follow=1"):
        refused = admin_client.get(url)
        assert refused.status_code == 503
        assert refused["Retry-After"] == "7"
    # What is not a live stream is served as ever.
    assert admin_client.get(f"/jobs/{job.id}/log.txt").status_code == 200
    assert admin_client.get(f"/jobs/{job.id}/status").status_code == 200
    first.close()  # the client left: its place is free again
    assert capacity.open_streams() == 0
    again = admin_client.get(f"/jobs/{job.id}/log.txt?follow=1")
    assert again.status_code == 200
    again.close()
