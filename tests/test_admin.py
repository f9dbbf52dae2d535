"""The jobs admin: the run list, the launch pages, the read-only run page, the cancel and
re-run actions, permissions, CSRF and escaping, all through the test client."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.messages import get_messages
from django.contrib.staticfiles import finders
from django.db import connection
from django.http import HttpResponse
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from jobs import InvalidParameters, job, launcher, sleep
from jobs.models import Job, JobStatus, LogLine, LogStream
from tests.conftest import client_for, log_texts, run_now, user_with, wait_finished, wait_for

SCRIPT = "<script>alert(1)</script>"
ESCAPED_SCRIPT = "&lt;script&gt;alert(1)&lt;/script&gt;"

CHANGELIST = "/admin/jobs/job/"
LAUNCH = "/admin/jobs/job/launch/"


def launch_form_url(name: str) -> str:
    return f"/admin/jobs/job/launch/{name}/"


def change_url(run: Job) -> str:
    return reverse("admin:jobs_job_change", args=[run.pk])


# --- Test-only jobs --------------------------------------------------------------------------


@job("admin_tests.flag", title="Flag")
def flag(flag: bool = True) -> None:
    print(f"flag is {flag}")


@job("admin_tests.shout", title="Shout")
def shout(text: str) -> None:
    print(text)
    raise RuntimeError(text)


@job("admin_tests.wait", title="Wait")
def wait(seconds: float = 60) -> None:
    print("waiting")
    sleep(seconds)


# --- Helpers and fixtures --------------------------------------------------------------------


def make_run(name: str = "demo.echo", **fields: Any) -> Job:
    fields.setdefault("params", {"text": "hi", "times": 1})
    fields.setdefault("status", JobStatus.SUCCEEDED)
    return Job.objects.create(name=name, **fields)


def listed(response: HttpResponse) -> list[Job]:
    return list(response.context["cl"].result_list)


def message_texts(response: HttpResponse) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


# --- The run list ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_changelist_lists_runs_newest_first_with_their_columns(admin_client: Client, admin_user: Any) -> None:
    now = timezone.now()
    older = make_run(created_at=now - timedelta(hours=1), launched_by=admin_user)
    newer = make_run(
        "demo.fail",
        params={},
        status=JobStatus.FAILED,
        created_at=now,
        started_at=now,
        finished_at=now + timedelta(seconds=2.5),
        line_count=4,
        error="RuntimeError: demo.fail failed on purpose",
    )

    response = admin_client.get(CHANGELIST)

    assert response.status_code == 200
    assert listed(response) == [newer, older]
    content = response.content.decode()
    assert '<span class="runlog-status runlog-status-failed">Failed</span>' in content
    assert "2.5 s" in content
    assert "RuntimeError: demo.fail failed on purpose" in content
    assert admin_user.username in content
    assert f'<a href="{older.get_absolute_url()}">Open</a>' in content
    assert f'<a href="{newer.get_absolute_url()}">Open</a>' in content


@pytest.mark.django_db
def test_changelist_query_count_does_not_grow_with_runs(admin_client: Client, django_user_model: Any) -> None:
    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert admin_client.get(CHANGELIST).status_code == 200
        return len(captured)

    make_run(launched_by=django_user_model.objects.create_user("launcher-0"))
    one_run = queries()
    for index in range(1, 6):
        make_run(launched_by=django_user_model.objects.create_user(f"launcher-{index}"))

    assert queries() == one_run


@pytest.mark.django_db
def test_changelist_filters_by_status_name_and_date(admin_client: Client) -> None:
    failed = make_run("demo.fail", params={}, status=JobStatus.FAILED)
    echoed = make_run("demo.echo")
    last_year = make_run("demo.echo", created_at=timezone.now() - timedelta(days=400))

    assert listed(admin_client.get(CHANGELIST, {"status__exact": "failed"})) == [failed]
    assert listed(admin_client.get(CHANGELIST, {"name": "demo.echo"})) == [echoed, last_year]
    this_year = admin_client.get(CHANGELIST, {"created_at__year": timezone.now().year})
    assert set(listed(this_year)) == {failed, echoed}


@pytest.mark.django_db
def test_changelist_searches_by_id_and_by_name(admin_client: Client) -> None:
    wanted = make_run("demo.echo")
    make_run("demo.echo")
    failed = make_run("demo.fail", params={})

    assert listed(admin_client.get(CHANGELIST, {"q": str(wanted.id)})) == [wanted]
    assert listed(admin_client.get(CHANGELIST, {"q": str(wanted.id)[:8]})) == [wanted]  # as page titles show it
    assert listed(admin_client.get(CHANGELIST, {"q": str(wanted.id)[:8].upper()})) == [wanted]
    assert listed(admin_client.get(CHANGELIST, {"q": "fail"})) == [failed]
    assert listed(admin_client.get(CHANGELIST, {"q": "no such run"})) == []


# --- The launch button and pages -------------------------------------------------------------


@pytest.mark.django_db
def test_launch_button_is_shown_to_users_who_may_launch(admin_client: Client) -> None:
    button = f'<a href="{LAUNCH}" class="addlink">Launch a job</a>'
    assert reverse("admin:jobs_job_launch") == LAUNCH
    assert button in admin_client.get(CHANGELIST).content.decode()

    viewer = client_for(user_with("view_job", "change_job"))
    response = viewer.get(CHANGELIST)
    assert response.status_code == 200
    assert "Launch a job" not in response.content.decode()


@pytest.mark.django_db
def test_builtin_add_view_stays_disabled(admin_client: Client) -> None:
    assert admin_client.get("/admin/jobs/job/add/").status_code == 403


@pytest.mark.django_db
def test_launch_list_links_every_registered_job(admin_client: Client) -> None:
    response = admin_client.get(LAUNCH)

    assert response.status_code == 200
    content = response.content.decode()
    for name, title in [("demo.count", "Count"), ("demo.echo", "Echo"), ("admin_tests.flag", "Flag")]:
        assert reverse("admin:jobs_job_launch_form", args=[name]) == launch_form_url(name)
        assert f'<a href="{launch_form_url(name)}">{title}</a>' in content
    assert "Prints the given text, <code>times</code> times." in content


@pytest.mark.django_db
def test_launch_form_shows_the_parameters_in_admin_rows(admin_client: Client) -> None:
    response = admin_client.get(launch_form_url("demo.count"))

    assert response.status_code == 200
    content = response.content.decode()
    assert '<fieldset class="module aligned ">' in content
    assert 'class="form-row field-n"' in content
    assert 'name="n" value="10"' in content
    assert 'name="interval" value="1.0"' in content
    assert 'type="submit" value="Launch"' in content


@pytest.mark.django_db
def test_launch_form_unknown_job_is_404(admin_client: Client) -> None:
    assert admin_client.get(launch_form_url("no.such.job")).status_code == 404
    assert admin_client.post(launch_form_url("no.such.job"), {}).status_code == 404


@pytest.mark.django_db
def test_launch_form_invalid_post_shows_errors_and_launches_nothing(admin_client: Client) -> None:
    response = admin_client.post(launch_form_url("demo.count"), {"n": "many", "interval": "1"})

    assert response.status_code == 200
    content = response.content.decode()
    assert "Please correct the error below." in content
    assert "Enter a whole number." in content
    assert 'class="form-row errors field-n"' in content
    assert not Job.objects.exists()


@pytest.mark.django_db
def test_launch_form_missing_required_parameter_is_an_error(admin_client: Client) -> None:
    response = admin_client.post(launch_form_url("demo.echo"), {"times": "1"})

    assert response.status_code == 200
    assert "This field is required." in response.content.decode()
    assert not Job.objects.exists()


@pytest.mark.django_db
def test_launch_errors_from_the_launcher_become_form_errors(
    admin_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(name: str, **params: Any) -> Job:
        raise InvalidParameters(name, {"text": ["Too loud."], "__all__": ["Not today."], "gone": ["Was removed."]})

    monkeypatch.setattr(launcher, "launch", refuse)
    response = admin_client.post(launch_form_url("demo.echo"), {"text": "hi", "times": "1"})

    assert response.status_code == 200
    content = response.content.decode()
    assert "Too loud." in content
    assert "Not today." in content
    assert "Was removed." in content  # an error for a field the form lacks is shown on the form
    assert not Job.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_launch_form_valid_post_launches_and_lands_on_the_job_page(staff_user: Any) -> None:
    client = Client()
    client.force_login(staff_user)

    response = client.post(launch_form_url("demo.echo"), {"text": "hello", "times": "2"})

    run = Job.objects.get()
    assert response.status_code == 302
    assert response["Location"] == run.get_absolute_url()
    assert message_texts(response) == ["Launched Echo."]
    assert run.launched_by == staff_user
    assert run.params == {"text": "hello", "times": 2}
    wait_finished(run)
    assert run.status == JobStatus.SUCCEEDED
    assert log_texts(run) == ["hello", "hello"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("data", "printed"), [({}, "flag is False"), ({"flag": "on"}, "flag is True")])
def test_launch_form_unticked_checkbox_means_false(staff_user: Any, data: dict[str, str], printed: str) -> None:
    # The job's default is True: an unticked box (absent from the POST) must still be False.
    client = Client()
    client.force_login(staff_user)

    assert client.post(launch_form_url("admin_tests.flag"), data).status_code == 302

    run = wait_finished(Job.objects.get())
    assert log_texts(run) == [printed]


# --- The read-only run page ------------------------------------------------------------------


@pytest.mark.django_db
def test_change_view_is_read_only_with_the_log_tail_and_links(admin_client: Client) -> None:
    run = make_run(line_count=250)
    LogLine.objects.bulk_create(
        LogLine(
            job=run,
            number=number,
            stream=LogStream.STDERR if number == 250 else LogStream.STDOUT,
            text=f"line {number}",
        )
        for number in range(1, 251)
    )

    response = admin_client.get(change_url(run))

    assert response.status_code == 200
    content = response.content.decode()
    assert 'name="_save"' not in content
    assert 'name="_continue"' not in content
    assert not response.context["adminform"].form.fields  # every field is shown read-only
    assert "the last 200 of 250 lines" in content
    assert '<td class="runlog-text">line 51</td>' in content
    assert '<td class="runlog-text">line 50</td>' not in content
    assert content.index(">line 51<") < content.index(">line 249<")
    assert '<tr class="runlog-stream-stderr">' in content  # stderr is styled apart
    assert f'href="{run.get_absolute_url()}"' in content
    assert f'href="{reverse("jobs:log_text", args=[run.id])}"' in content


@pytest.mark.django_db
def test_post_to_change_view_changes_nothing(admin_client: Client) -> None:
    run = make_run(status=JobStatus.RUNNING, line_count=3)

    response = admin_client.post(change_url(run), {"status": "succeeded", "line_count": "0", "_save": "Save"})

    assert response.status_code == 403
    stored = Job.objects.get(pk=run.pk)
    assert (stored.status, stored.line_count, stored.name) == (JobStatus.RUNNING, 3, "demo.echo")


@pytest.mark.django_db
def test_delete_removes_the_run_and_its_lines(admin_client: Client) -> None:
    run = make_run(line_count=1)
    LogLine.objects.create(job=run, number=1, text="gone")

    response = admin_client.post(reverse("admin:jobs_job_delete", args=[run.pk]), {"post": "yes"})

    assert response.status_code == 302
    assert not Job.objects.exists()
    assert not LogLine.objects.exists()


@pytest.mark.django_db
def test_a_run_still_going_cannot_be_deleted(admin_client: Client) -> None:
    run = make_run(status=JobStatus.RUNNING, line_count=1)

    response = admin_client.post(reverse("admin:jobs_job_delete", args=[run.pk]), {"post": "yes"})

    assert response.status_code == 403
    assert Job.objects.filter(pk=run.pk).exists()


@pytest.mark.django_db
def test_log_lines_have_no_admin_edit_path(admin_client: Client) -> None:
    assert not admin.site.is_registered(LogLine)
    with pytest.raises(NoReverseMatch):
        reverse("admin:jobs_logline_changelist")
    assert admin_client.get("/admin/jobs/logline/").status_code == 404


# --- Escaping --------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_job_output_is_shown_escaped(staff_user: Any) -> None:
    client = Client()
    client.force_login(staff_user)
    run = run_now("admin_tests.shout", text=SCRIPT)
    assert run.status == JobStatus.FAILED and SCRIPT in run.error

    for url in [CHANGELIST, change_url(run)]:
        content = client.get(url).content.decode()
        assert SCRIPT not in content
        assert ESCAPED_SCRIPT in content
    assert f'<td class="runlog-text">{ESCAPED_SCRIPT}</td>' in client.get(change_url(run)).content.decode()


# --- Actions ---------------------------------------------------------------------------------


def run_action(client: Client, action: str, *runs: Job) -> HttpResponse:
    return client.post(CHANGELIST, {"action": action, "_selected_action": [str(run.pk) for run in runs]})


@pytest.mark.django_db(transaction=True)
def test_cancel_action_stops_unfinished_runs_only(staff_user: Any) -> None:
    client = Client()
    client.force_login(staff_user)
    running = launcher.launch("admin_tests.wait", seconds=60)
    wait_for(lambda: Job.objects.filter(pk=running.pk, status=JobStatus.RUNNING).exists(), "the run to start")
    finished = run_now("demo.echo", text="done")

    response = run_action(client, "cancel_runs", running, finished)

    assert response.status_code == 302
    assert message_texts(response) == ["Asked 1 run to stop.", "1 run had already finished."]
    assert wait_finished(running).status == JobStatus.CANCELLED
    finished.refresh_from_db()
    assert finished.status == JobStatus.SUCCEEDED


@pytest.mark.django_db(transaction=True)
def test_rerun_action_launches_new_runs_with_the_same_parameters(staff_user: Any) -> None:
    client = Client()
    client.force_login(staff_user)
    original = run_now("demo.echo", text="again", times=2)

    response = run_action(client, "rerun_runs", original)

    assert response.status_code == 302
    assert message_texts(response) == ["Launched 1 run again."]
    rerun = Job.objects.exclude(pk=original.pk).get()
    assert (rerun.name, rerun.params, rerun.launched_by) == ("demo.echo", original.params, staff_user)
    assert wait_finished(rerun).status == JobStatus.SUCCEEDED
    assert log_texts(rerun) == ["again", "again"]


@pytest.mark.django_db(transaction=True)
def test_rerun_action_reports_runs_that_cannot_be_rerun(staff_user: Any) -> None:
    client = Client()
    client.force_login(staff_user)
    unregistered = make_run("admin_tests.removed", params={})
    invalid = make_run("demo.echo", params={"times": "often"})
    good = run_now("demo.echo", text="fine")

    response = run_action(client, "rerun_runs", unregistered, invalid, good)

    assert response.status_code == 302
    texts = message_texts(response)
    assert texts[-1] == "Launched 1 run again."
    assert any(text.startswith(f"Could not re-run {unregistered}") for text in texts)
    assert any(text.startswith(f"Could not re-run {invalid}") for text in texts)
    reruns = Job.objects.exclude(pk__in=[unregistered.pk, invalid.pk, good.pk])
    assert [(rerun.name, rerun.params) for rerun in reruns] == [("demo.echo", good.params)]
    wait_finished(*reruns)


@pytest.mark.django_db
def test_actions_are_offered_to_users_who_may_run_them(admin_client: Client) -> None:
    make_run(status=JobStatus.RUNNING)
    viewer = client_for(user_with("view_job"))

    assert 'value="cancel_runs"' in admin_client.get(CHANGELIST).content.decode()
    assert 'value="cancel_runs"' not in viewer.get(CHANGELIST).content.decode()


@job("admin_tests.described", description="Takes `<b>bold</b>` and <i>this</i>,\nthen `n` steps.")
def described() -> None:
    """Its description shows `code` as code and nothing as markup."""


@pytest.mark.django_db
def test_job_descriptions_show_backticks_as_code_and_everything_else_as_text(admin_client: Client) -> None:
    listing = admin_client.get(LAUNCH).content.decode()
    assert "every <code>interval</code> seconds" in listing  # demo.count's description
    assert (
        "Takes <code>&lt;b&gt;bold&lt;/b&gt;</code> and &lt;i&gt;this&lt;/i&gt;,<br>then <code>n</code> steps."
        in listing
    )
    form = admin_client.get(reverse("admin:jobs_job_launch_form", args=["admin_tests.described"])).content.decode()
    assert "then <code>n</code> steps." in form
    assert "<b>bold</b>" not in form and "<i>this</i>" not in form


@pytest.mark.django_db
def test_admin_pages_name_their_icon_so_browsers_ask_for_no_favicon_ico(admin_client: Client) -> None:
    for url in (CHANGELIST, LAUNCH, "/admin/"):
        page = admin_client.get(url).content.decode()
        icon = re.search(r'<link rel="icon" href="([^"]+)"', page)
        assert icon, f"{url} names no icon"
        assert finders.find(icon[1].removeprefix("/static/")), f"{icon[1]} is not a static file"
