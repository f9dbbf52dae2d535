"""The HTML pages: the job list, a job's page (the permalink) and re-run, through Django's
test client. The live behaviour of the page (log.js) is tested in a browser in test_browser."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db import connection
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from jobs.display import format_duration
from jobs.models import Job, JobStatus, LogLine, LogStream
from jobs.streaming.endpoints import MAX_LINES_PER_REQUEST
from jobs.streaming.formats import SSE_RETRY_MS
from jobs.streaming.search import DEFAULT_MATCHES
from jobs.views import PAGE_SIZE, TAIL_LINES
from tests.conftest import client_for, log_texts, user_with, wait_finished

pytestmark = pytest.mark.django_db

XSS = "<script>alert(1)</script>"
XSS_ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"


@pytest.fixture
def viewer() -> Client:
    """May see runs, not change them."""
    return client_for(user_with("view_job", staff=False))


@pytest.fixture
def operator() -> Client:
    """May see, cancel and re-run runs."""
    return client_for(user_with("view_job", "change_job", staff=False))


def make_job(name: str = "demo.echo", **fields: Any) -> Job:
    fields.setdefault("params", {"text": "hello", "times": 1})
    return Job.objects.create(name=name, **fields)


def add_lines(job: Job, count: int, stream: str = LogStream.STDOUT, text: str = "line {}") -> None:
    start = job.line_count
    LogLine.objects.bulk_create(
        LogLine(job=job, number=number, stream=stream, text=text.format(number))
        for number in range(start + 1, start + count + 1)
    )
    job.line_count = start + count
    job.save(update_fields=["line_count"])


def rendered_line_numbers(html: str) -> list[int]:
    return [int(number) for number in re.findall(r'<a class="ln" href="#L(\d+)" id="L\1">\1</a>', html)]


def detail_url(job: Job) -> str:
    return reverse("jobs:detail", args=[job.id])


# --- Layout ------------------------------------------------------------------------------------


def test_home_redirects_to_the_list(viewer: Client) -> None:
    response = viewer.get("/")
    assert response.status_code == 302
    assert response["Location"] == reverse("jobs:list")


def test_layout_has_navigation_and_a_logout_form() -> None:
    user = user_with("view_job", staff=False)
    html = client_for(user).get(reverse("jobs:list")).content.decode()
    assert f'href="{reverse("jobs:list")}">Jobs</a>' in html
    assert user.get_username() in html
    assert re.search(rf'<form class="site-user" method="post" action="{reverse("admin:logout")}">', html)
    assert "csrfmiddlewaretoken" in html
    # Only staff get a link to the admin.
    assert f'href="{reverse("admin:index")}"' not in html


# --- The list ---------------------------------------------------------------------------------


def test_list_shows_runs_newest_first_with_their_facts(viewer: Client, django_user_model: Any) -> None:
    launcher = django_user_model.objects.create_user("alice")
    now = timezone.now()
    older = make_job("demo.count", created_at=now - timedelta(minutes=5))
    newer = make_job(
        "demo.fail",
        created_at=now,
        status=JobStatus.FAILED,
        launched_by=launcher,
        started_at=now - timedelta(seconds=90),
        finished_at=now - timedelta(seconds=25),
        line_count=7,
    )
    response = viewer.get(reverse("jobs:list"))
    assert response.status_code == 200
    html = response.content.decode()
    assert html.index(newer.get_absolute_url()) < html.index(older.get_absolute_url())
    assert f'<a class="job-link" href="{newer.get_absolute_url()}">demo.fail</a>' in html
    assert '<span class="badge badge-failed">Failed</span>' in html
    assert '<span class="badge badge-queued">Queued</span>' in html
    assert "alice" in html
    assert "1 min 05 s" in html
    assert '<td class="num">7</td>' in html


def test_list_filters_by_status_and_name(viewer: Client) -> None:
    make_job("demo.count", status=JobStatus.SUCCEEDED)
    make_job("demo.fail", status=JobStatus.FAILED)
    make_job("demo.flood", status=JobStatus.SUCCEEDED)

    def names(**query: str) -> list[str]:
        response = viewer.get(reverse("jobs:list"), query)
        assert response.status_code == 200
        return [job.name for job, _ in response.context["rows"]]

    assert sorted(names(status="succeeded")) == ["demo.count", "demo.flood"]
    assert names(name="FAIL") == ["demo.fail"]
    assert names(status="succeeded", name="flood") == ["demo.flood"]
    assert sorted(names()) == ["demo.count", "demo.fail", "demo.flood"]


def test_list_explains_an_invalid_status_and_filters_nothing(viewer: Client) -> None:
    make_job()
    response = viewer.get(reverse("jobs:list"), {"status": "exploded"})
    assert response.status_code == 200
    assert len(response.context["rows"]) == 1
    assert "The filters were not applied." in response.content.decode()


def test_list_empty_states(viewer: Client) -> None:
    assert "No job has run yet." in viewer.get(reverse("jobs:list")).content.decode()
    make_job()
    html = viewer.get(reverse("jobs:list"), {"status": "lost"}).content.decode()
    assert "No run matches these filters." in html


def test_list_pages_and_keeps_filters_in_page_links(viewer: Client) -> None:
    now = timezone.now()
    Job.objects.bulk_create(
        Job(name="demo.count", status=JobStatus.SUCCEEDED, created_at=now - timedelta(seconds=index))
        for index in range(PAGE_SIZE + 1)
    )
    first = viewer.get(reverse("jobs:list"), {"status": "succeeded"})
    assert len(first.context["rows"]) == PAGE_SIZE
    assert 'href="?status=succeeded&amp;page=2"' in first.content.decode()
    second = viewer.get(reverse("jobs:list"), {"status": "succeeded", "page": "2"})
    assert len(second.context["rows"]) == 1
    assert 'href="?status=succeeded&amp;page=1"' in second.content.decode()


@pytest.mark.parametrize("page", ["abc", "0", "-1", "999", "", "1.5"])
def test_list_answers_bad_page_numbers_with_a_page(viewer: Client, page: str) -> None:
    make_job()
    response = viewer.get(reverse("jobs:list"), {"page": page})
    assert response.status_code == 200
    assert len(response.context["rows"]) == 1


def test_list_query_count_does_not_grow_with_rows(viewer: Client, django_user_model: Any) -> None:
    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert viewer.get(reverse("jobs:list")).status_code == 200
        return len(captured)

    make_job(launched_by=django_user_model.objects.create_user("first"))
    few = queries()
    for index in range(20):
        make_job(launched_by=django_user_model.objects.create_user(f"user{index}"))
    assert queries() == few


def test_list_refuses_post(viewer: Client) -> None:
    assert viewer.post(reverse("jobs:list")).status_code == 405


# --- A job's page ------------------------------------------------------------------------------


def test_detail_shows_the_run(viewer: Client, django_user_model: Any) -> None:
    now = timezone.now()
    job = make_job(
        "demo.progress",
        params={"steps": 20, "mode": "careful", "dry": None},
        status=JobStatus.FAILED,
        launched_by=django_user_model.objects.create_user("bob"),
        started_at=now - timedelta(seconds=12.5),
        finished_at=now,
        error="RuntimeError: boom",
        progress_done=5,
        progress_total=20,
        progress_message="step 5 of 20",
        line_count=0,
    )
    response = viewer.get(detail_url(job))
    assert response.status_code == 200
    html = response.content.decode()
    assert "<h1>\n      demo.progress" in html
    assert "Progress" in html  # the registered title
    assert "Reports progress" in html  # and description
    assert '<span class="badge badge-failed" id="status-badge">Failed</span>' in html
    assert "bob" in html
    assert '<dd id="duration">12.5 s</dd>' in html
    assert "RuntimeError: boom" in html
    assert '<th scope="row">steps</th><td><code>20</code></td>' in html
    assert '<th scope="row">mode</th><td><code>careful</code></td>' in html
    assert '<th scope="row">dry</th><td><code>null</code></td>' in html
    assert '<progress id="progress" max="20.000000" value="5.000000">' in html
    assert "5 / 20 · step 5 of 20" in html
    assert f'href="{reverse("jobs:log_text", args=[job.id])}">Raw log</a>' in html
    assert "This run wrote no output." in html
    # Finished: nothing left to follow.
    assert "Follow as plain text" not in html


def test_detail_of_a_running_job_links_the_followed_text_log(viewer: Client) -> None:
    job = make_job(status=JobStatus.RUNNING, started_at=timezone.now())
    add_lines(job, 3)
    html = viewer.get(detail_url(job)).content.decode()
    assert f'href="{reverse("jobs:log_text", args=[job.id])}?follow=1&amp;offset=0">Follow as plain text</a>' in html
    assert 'data-finished="false"' in html
    assert 'data-last="3"' in html
    assert f'data-events-url="{reverse("jobs:events", args=[job.id])}"' in html
    assert f'data-lines-url="{reverse("jobs:lines", args=[job.id])}"' in html


def test_detail_of_an_unregistered_job_still_shows_its_log(operator: Client) -> None:
    job = make_job("gone.job", status=JobStatus.SUCCEEDED)
    add_lines(job, 2)
    html = operator.get(detail_url(job)).content.decode()
    assert "no longer registered" in html
    assert rendered_line_numbers(html) == [1, 2]
    assert reverse("jobs:rerun", args=[job.id]) not in html


def test_detail_escapes_job_output_parameters_and_error(viewer: Client) -> None:
    job = make_job(params={"text": XSS}, status=JobStatus.FAILED, error=XSS)
    add_lines(job, 1, stream=LogStream.STDERR, text=XSS)
    html = viewer.get(detail_url(job)).content.decode()
    assert XSS not in html
    assert html.count(XSS_ESCAPED) == 3
    # No inline code: the page's code comes from the static file, its settings are data.
    assert re.findall(r"<script[^>]*>", html) == [
        '<script type="module" src="/static/jobs/log.js">',
        '<script id="job-settings" type="application/json">',
    ]


def test_detail_renders_only_the_tail_of_a_big_log(viewer: Client) -> None:
    job = make_job(status=JobStatus.SUCCEEDED)
    add_lines(job, TAIL_LINES + 500)
    with CaptureQueriesContext(connection) as captured:
        html = viewer.get(detail_url(job)).content.decode()
    assert rendered_line_numbers(html) == list(range(501, TAIL_LINES + 501))
    assert 'id="L500"' not in html
    assert "500 earlier lines not shown." in html
    assert 'id="earlier-button"' in html
    assert "Show 500 earlier lines" in html
    assert 'data-before-tail="500"' in html
    # The lines are read with one bounded query.
    line_queries = [query["sql"] for query in captured if "jobs_logline" in query["sql"]]
    assert len(line_queries) == 1
    assert "LIMIT 2000" in line_queries[0]


def test_detail_of_a_short_log_has_no_earlier_lines(viewer: Client) -> None:
    job = make_job(status=JobStatus.SUCCEEDED)
    add_lines(job, 3)
    html = viewer.get(detail_url(job)).content.decode()
    assert rendered_line_numbers(html) == [1, 2, 3]
    assert '<div id="earlier" class="log-earlier" hidden>' in html


def test_detail_marks_each_stream(viewer: Client) -> None:
    job = make_job(status=JobStatus.SUCCEEDED)
    for stream in LogStream.values:
        add_lines(job, 1, stream=stream, text=f"from {stream}")
    html = viewer.get(detail_url(job)).content.decode()
    for number, stream in enumerate(LogStream.values, start=1):
        assert (
            f'<div class="line stream-{stream}"><a class="ln" href="#L{number}" id="L{number}">{number}</a>'
            f'<span class="tx">from {stream}</span></div>'
        ) in html


@pytest.mark.parametrize(
    ("status", "cancel", "rerun"),
    [(JobStatus.RUNNING, True, True), (JobStatus.QUEUED, True, True), (JobStatus.SUCCEEDED, False, True)],
)
def test_operators_get_cancel_while_unfinished_and_rerun(
    operator: Client, status: str, cancel: bool, rerun: bool
) -> None:
    job = make_job(status=status)
    html = operator.get(detail_url(job)).content.decode()
    assert (f'action="{reverse("jobs:cancel", args=[job.id])}"' in html) is cancel
    assert (f'action="{reverse("jobs:rerun", args=[job.id])}"' in html) is rerun


def test_viewers_get_neither_cancel_nor_rerun(viewer: Client) -> None:
    job = make_job(status=JobStatus.RUNNING)
    html = viewer.get(detail_url(job)).content.decode()
    assert reverse("jobs:cancel", args=[job.id]) not in html
    assert reverse("jobs:rerun", args=[job.id]) not in html


def test_detail_of_an_unknown_run_is_404(viewer: Client) -> None:
    assert viewer.get(reverse("jobs:detail", args=[uuid.uuid4()])).status_code == 404


@pytest.mark.parametrize("path", ["/jobs/not-a-uuid/", "/jobs/1234/", "/jobs/%3Cscript%3E/"])
def test_detail_of_a_malformed_id_is_404(viewer: Client, path: str) -> None:
    assert viewer.get(path).status_code == 404


# --- Re-run ---------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_rerun_launches_a_new_run_with_the_same_parameters() -> None:
    operator = user_with("view_job", "change_job", staff=False)
    client = client_for(operator)
    job = make_job("demo.echo", params={"text": "again", "times": 2}, status=JobStatus.SUCCEEDED)
    response = client.post(reverse("jobs:rerun", args=[job.id]), follow=True)
    new_run = Job.objects.exclude(pk=job.pk).get()
    assert response.redirect_chain == [(new_run.get_absolute_url(), 302)]
    assert new_run.params == job.params
    assert new_run.launched_by == operator
    assert "Launched a new run of demo.echo" in response.content.decode()
    wait_finished(new_run)
    assert new_run.status == JobStatus.SUCCEEDED
    assert log_texts(new_run) == ["again", "again"]


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("gone.job", {}, "No job is registered as &#x27;gone.job&#x27;"),
        ("demo.echo", {"times": "many"}, "Invalid parameters for demo.echo"),
    ],
)
def test_rerun_that_cannot_launch_explains_why(
    operator: Client, name: str, params: dict[str, Any], message: str
) -> None:
    job = make_job(name, params=params, status=JobStatus.FAILED)
    response = operator.post(reverse("jobs:rerun", args=[job.id]), follow=True)
    assert response.redirect_chain == [(job.get_absolute_url(), 302)]
    assert message in response.content.decode()
    assert Job.objects.count() == 1


def test_rerun_needs_post(operator: Client) -> None:
    job = make_job(status=JobStatus.SUCCEEDED)
    assert operator.get(reverse("jobs:rerun", args=[job.id])).status_code == 405
    assert Job.objects.count() == 1


def test_rerun_of_an_unknown_run_is_404(operator: Client) -> None:
    assert operator.post(reverse("jobs:rerun", args=[uuid.uuid4()])).status_code == 404


# --- Formatting -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "—"), (0, "0.0 s"), (4.24, "4.2 s"), (59.9, "59.9 s"), (185, "3 min 05 s"), (7380, "2 h 03 min")],
)
def test_format_duration(seconds: float | None, text: str) -> None:
    assert format_duration(None if seconds is None else timedelta(seconds=seconds)) == text


#: A time with its rendering in Asia/Kolkata (+05:30: the offset's minutes show too).
MOMENT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
MOMENT_SHOWN = "2026-01-02 08:34:05 +0530"


@override_settings(TIME_ZONE="Asia/Kolkata")
def test_times_have_one_format_with_the_time_zone_on_every_page(admin_client: Client) -> None:
    job = make_job(
        status=JobStatus.SUCCEEDED, created_at=MOMENT, started_at=MOMENT, finished_at=MOMENT + timedelta(hours=1)
    )
    later_shown = "2026-01-02 09:34:05 +0530"
    pages = {
        "list": reverse("jobs:list"),
        "detail": detail_url(job),
        "admin list": reverse("admin:jobs_job_changelist"),
        "admin run": reverse("admin:jobs_job_change", args=[job.id]),
    }
    for name, url in pages.items():
        html = admin_client.get(url).content.decode()
        assert MOMENT_SHOWN in html, name
        # Every time shown has the format (ISO attributes aside); none is in Django's default
        # ("Jan. 2, 2026, 8:34 a.m."); the admin's date navigation names days, not times.
        shown = re.findall(r"\d{4}-\d\d-\d\d \d\d:\d\d[^<\"]*", html)
        assert all(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}", text) for text in shown), (name, shown)
        assert not re.search(r"\d [ap]\.m\.", html), name
    detail = admin_client.get(pages["detail"]).content.decode()
    assert f'<time data-field="started_at" datetime="2026-01-02T08:34:05+05:30">{MOMENT_SHOWN}</time>' in detail
    assert f'<time data-field="finished_at" datetime="2026-01-02T09:34:05+05:30">{later_shown}</time>' in detail
    assert later_shown in admin_client.get(pages["admin run"]).content.decode()


def page_settings_of(html: str) -> Any:
    match = re.search(r'<script id="job-settings" type="application/json">(.*?)</script>', html)
    assert match, "the job page has no settings for its script"
    return json.loads(match[1])


def test_the_job_page_gives_its_script_the_servers_sizes_and_names(viewer: Client) -> None:
    settings = page_settings_of(viewer.get(detail_url(make_job())).content.decode())
    assert settings["pageLines"] == TAIL_LINES
    assert settings["fetchLimit"] == MAX_LINES_PER_REQUEST
    assert settings["searchPage"] == DEFAULT_MATCHES
    assert settings["retryMs"] == SSE_RETRY_MS
    assert settings["streams"] == ["stdout", "stderr", "log", "system"]
    assert settings["statuses"] == {
        "queued": "Queued",
        "running": "Running",
        "succeeded": "Succeeded",
        "failed": "Failed",
        "cancelled": "Cancelled",
        "lost": "Lost",
    }
