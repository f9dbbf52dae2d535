"""Who may do what: every URL of the app against every kind of user.

The expected answer of each cell is written out in MATRIX below, derived from the
permissions (README.md, "Who can do what"): the pages redirect anonymous users and users without `jobs.view_job` to
the login; log.txt, events, lines, search and status answer them 403 (their callers are
EventSource, fetch() and scripts, which cannot follow a login page); launching needs
`jobs.add_job`; cancel and re-run need `jobs.change_job`. The admin behaves as Django's
admin does: a user who is not staff is sent to the admin login whatever permissions they
hold, staff without the permission a view needs get 403, and an action the user may not
run is not offered, so posting it re-shows the list and does nothing.

Each POST that is allowed must have its effect, and each refused one none. Every POST
needs the CSRF token, and permalinks are random UUIDs, so a guessed id finds nothing.

The tests are transactional: the streaming endpoints give their database connection back
when they end, which a test inside one transaction cannot survive. So an allowed launch or
re-run really runs (demo.echo, quickly), and the test waits for it to end.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from jobs.launcher import create_run
from jobs.models import Job, JobStatus, LogLine
from tests.conftest import RUN_URLS, client_for, user_with, wait_finished

pytestmark = pytest.mark.django_db(transaction=True)

#: A redirect to the admin login (with ?next= the requested path).
LOGIN = "login redirect"
Answer = int | str

# --- The roles -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Role:
    """A kind of user: None for anonymous, else staff or not, with these `jobs` permissions."""

    staff: bool = False
    permissions: tuple[str, ...] = ()
    superuser: bool = False


ROLES: dict[str, Role | None] = {
    "anonymous": None,
    "user": Role(),
    "user+view": Role(permissions=("view_job",)),
    "staff": Role(staff=True),
    "staff+add": Role(staff=True, permissions=("add_job",)),
    "staff+view": Role(staff=True, permissions=("view_job",)),
    "staff+view+add": Role(staff=True, permissions=("view_job", "add_job")),
    "staff+view+change": Role(staff=True, permissions=("view_job", "change_job")),
    "superuser": Role(staff=True, superuser=True),
}

# --- The expected answers: one row per request, one column per role (ROLES' order) -------------

# fmt: off
MATRIX_ROWS: dict[str, tuple[Answer, ...]] = {
    #                       anonymous user   user+view staff  staff+add staff+view +add   +change superuser
    "page list":            (LOGIN,    LOGIN, 200,      LOGIN, LOGIN,    200,       200,   200,    200),
    "page detail":          (LOGIN,    LOGIN, 200,      LOGIN, LOGIN,    200,       200,   200,    200),
    "log.txt":              (403,      403,   200,      403,   403,      200,       200,   200,    200),
    "log.txt follow":       (403,      403,   200,      403,   403,      200,       200,   200,    200),
    "events":               (403,      403,   200,      403,   403,      200,       200,   200,    200),
    "lines":                (403,      403,   200,      403,   403,      200,       200,   200,    200),
    "search":               (403,      403,   200,      403,   403,      200,       200,   200,    200),
    "status":               (403,      403,   200,      403,   403,      200,       200,   200,    200),
    "POST cancel":          (403,      403,   403,      403,   403,      403,       403,   302,    302),
    "POST rerun":           (403,      403,   403,      403,   403,      403,       403,   302,    302),
    "admin changelist":     (LOGIN,    LOGIN, LOGIN,    403,   403,      200,       200,   200,    200),
    "admin change view":    (LOGIN,    LOGIN, LOGIN,    403,   403,      200,       200,   200,    200),
    "admin launch list":    (LOGIN,    LOGIN, LOGIN,    403,   200,      403,       200,   403,    200),
    "admin launch form":    (LOGIN,    LOGIN, LOGIN,    403,   200,      403,       200,   403,    200),
    "POST admin launch":    (LOGIN,    LOGIN, LOGIN,    403,   302,      403,       302,   403,    302),
    # Django's admin does not offer an action the user may not run: the POST re-shows the list.
    "POST admin cancel":    (LOGIN,    LOGIN, LOGIN,    403,   403,      200,       200,   302,    302),
    "POST admin rerun":     (LOGIN,    LOGIN, LOGIN,    403,   403,      200,       200,   302,    302),
}
# fmt: on

MATRIX: dict[tuple[str, str], Answer] = {
    (request, role): answer for request, row in MATRIX_ROWS.items() for role, answer in zip(ROLES, row, strict=True)
}

# --- The runs the requests are about ----------------------------------------------------------


@dataclass
class Runs:
    finished: Job  # what pages, endpoints, re-run and the admin change view are about
    running: Job  # what cancel is about (a row nobody runs: only its flag is looked at)


@pytest.fixture
def runs() -> Runs:
    now = timezone.now()
    finished = Job.objects.create(
        name="demo.echo",
        params={"text": "hello", "times": 1},
        status=JobStatus.SUCCEEDED,
        started_at=now,
        finished_at=now,
        line_count=2,
    )
    LogLine.objects.bulk_create(LogLine(job=finished, number=n, text=f"line {n}") for n in (1, 2))
    running = Job.objects.create(name="demo.count", params={"n": 10, "interval": 1.0}, status=JobStatus.RUNNING)
    return Runs(finished, running)


# --- The requests ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Effect:
    """What a POST changes, read before and after it: (runs, whether `running` is cancelling)."""

    runs: int
    cancel_requested: bool


def finish_new_runs(runs: Runs) -> list[Job]:
    """The runs a POST launched, once they have ended (before the test's data is flushed)."""
    new_runs = list(Job.objects.exclude(pk__in=[runs.finished.pk, runs.running.pk]))
    for new_run in new_runs:
        wait_finished(new_run)
    return new_runs


def effect_now(runs: Runs) -> Effect:
    runs.running.refresh_from_db()
    return Effect(Job.objects.count(), runs.running.cancel_requested)


@dataclass(frozen=True)
class Request:
    method: str
    url: Callable[[Runs], str]
    data: Callable[[Runs], dict[str, Any]] = lambda runs: {}
    #: The effect of the POST when it is allowed, from the effect before it.
    effect: Callable[[Effect], Effect] | None = None


def admin_action(action: str, target: Callable[[Runs], Job]) -> Callable[[Runs], dict[str, Any]]:
    # The admin's own list form posts the action and the ticked rows' ids.
    return lambda runs: {"action": action, "_selected_action": [str(target(runs).pk)]}


def one_more_run(before: Effect) -> Effect:
    return Effect(before.runs + 1, before.cancel_requested)


def cancelling(before: Effect) -> Effect:
    return Effect(before.runs, True)


LAUNCH_DATA = {"text": "launched", "times": "1"}

REQUESTS: dict[str, Request] = {
    "page list": Request("get", lambda runs: reverse("jobs:list")),
    "page detail": Request("get", lambda runs: reverse("jobs:detail", args=[runs.finished.pk])),
    "log.txt": Request("get", lambda runs: reverse("jobs:log_text", args=[runs.finished.pk])),
    "log.txt follow": Request("get", lambda runs: reverse("jobs:log_text", args=[runs.finished.pk]) + "?follow=1"),
    "events": Request("get", lambda runs: reverse("jobs:events", args=[runs.finished.pk])),
    "lines": Request("get", lambda runs: reverse("jobs:lines", args=[runs.finished.pk])),
    "search": Request("get", lambda runs: reverse("jobs:search", args=[runs.finished.pk]) + "?q=line"),
    "status": Request("get", lambda runs: reverse("jobs:status", args=[runs.finished.pk])),
    "POST cancel": Request("post", lambda runs: reverse("jobs:cancel", args=[runs.running.pk]), effect=cancelling),
    "POST rerun": Request("post", lambda runs: reverse("jobs:rerun", args=[runs.finished.pk]), effect=one_more_run),
    "admin changelist": Request("get", lambda runs: reverse("admin:jobs_job_changelist")),
    "admin change view": Request("get", lambda runs: reverse("admin:jobs_job_change", args=[runs.finished.pk])),
    "admin launch list": Request("get", lambda runs: reverse("admin:jobs_job_launch")),
    "admin launch form": Request("get", lambda runs: reverse("admin:jobs_job_launch_form", args=["demo.echo"])),
    "POST admin launch": Request(
        "post",
        lambda runs: reverse("admin:jobs_job_launch_form", args=["demo.echo"]),
        lambda runs: LAUNCH_DATA,
        effect=one_more_run,
    ),
    "POST admin cancel": Request(
        "post",
        lambda runs: reverse("admin:jobs_job_changelist"),
        admin_action("cancel_runs", lambda runs: runs.running),
        effect=cancelling,
    ),
    "POST admin rerun": Request(
        "post",
        lambda runs: reverse("admin:jobs_job_changelist"),
        admin_action("rerun_runs", lambda runs: runs.finished),
        effect=one_more_run,
    ),
}
assert set(REQUESTS) == set(MATRIX_ROWS)


# --- Users and clients ------------------------------------------------------------------------


def client_as(role_name: str, **options: Any) -> tuple[Client, Any]:
    """A client logged in as a new user of the role (anonymous: not logged in), and the user."""
    role = ROLES[role_name]
    if role is None:
        return Client(**options), None
    user = user_with(*role.permissions, staff=role.staff, superuser=role.superuser)
    return client_for(user, **options), user


def send(client: Client, request: Request, runs: Runs, **extra: Any) -> Any:
    url = request.url(runs)
    data = {**request.data(runs), **extra}
    response = getattr(client, request.method)(url, data) if data else getattr(client, request.method)(url)
    # A stream is read to its end, as a client would, so that the view's generator finishes.
    response.body = b"".join(response.streaming_content) if response.streaming else response.content
    return response


def login_url(path: str) -> str:
    return f"{reverse('admin:login')}?next={path}"


# --- The matrix -------------------------------------------------------------------------------


@pytest.mark.parametrize(("request_key", "role"), list(MATRIX), ids=[f"{key} | {role}" for key, role in MATRIX])
def test_access(runs: Runs, request_key: str, role: str) -> None:
    request, expected = REQUESTS[request_key], MATRIX[request_key, role]
    client, user = client_as(role)
    before = effect_now(runs)

    response = send(client, request, runs)

    if expected == LOGIN:
        assert response.status_code == 302
        assert response["Location"] == login_url(request.url(runs))
    if expected in (LOGIN, 403):
        assert b"line 1" not in response.body, "a refusal shows nothing of the run's log"
    else:
        assert response.status_code == expected
        if expected == 302:
            # An allowed POST lands somewhere useful, never on the login.
            assert not response["Location"].startswith(reverse("admin:login"))
    allowed = expected == 302 and request.method == "post"
    if request.effect is None:
        assert effect_now(runs) == before  # a GET changes nothing
    elif allowed:
        assert effect_now(runs) == request.effect(before)
        # A launched run belongs to whoever launched it.
        assert all(new_run.launched_by == user for new_run in finish_new_runs(runs))
    else:
        assert effect_now(runs) == before, "a refused POST must change nothing"
        if response.status_code != 200:  # (a 200 is the admin's list, which they may see)
            # A refusal shows nothing of the runs, not even their ids.
            assert str(runs.finished.pk).encode() not in response.content
            assert str(runs.running.pk).encode() not in response.content


def test_the_matrix_covers_every_request_and_role() -> None:
    assert len(MATRIX) == len(REQUESTS) * len(ROLES)


# --- CSRF ---------------------------------------------------------------------------------------

POSTS = [key for key, request in REQUESTS.items() if request.method == "post"]


@pytest.mark.parametrize("request_key", POSTS)
def test_every_post_needs_the_csrf_token(runs: Runs, request_key: str) -> None:
    request = REQUESTS[request_key]
    assert request.effect is not None
    client, _ = client_as("superuser", enforce_csrf_checks=True)
    before = effect_now(runs)

    refused = send(client, request, runs)

    assert refused.status_code == 403
    assert b"CSRF" in refused.content
    assert effect_now(runs) == before
    # The same POST with the token the site's pages hand out works: the token is what was missing.
    token = csrf_token_of(client)
    accepted = send(client, request, runs, csrfmiddlewaretoken=token)
    assert accepted.status_code == 302
    assert effect_now(runs) == request.effect(before)
    finish_new_runs(runs)


def csrf_token_of(client: Client) -> str:
    """The CSRF token a page with a form (every page has the logout form) gives the browser."""
    assert client.get(reverse("jobs:list")).status_code == 200
    return client.cookies["csrftoken"].value


def test_logout_needs_the_csrf_token() -> None:
    client, _ = client_as("superuser", enforce_csrf_checks=True)
    logout = reverse("admin:logout")

    assert client.post(logout).status_code == 403
    assert client.get(reverse("jobs:list")).status_code == 200  # still logged in

    assert client.post(logout, {"csrfmiddlewaretoken": csrf_token_of(client)}).status_code == 200
    assert client.get(reverse("jobs:list"))["Location"] == login_url(reverse("jobs:list"))


def test_logout_refuses_get() -> None:
    # Since Django 5.0 a GET cannot log a user out (a link or an <img> could otherwise do it).
    client, _ = client_as("superuser")
    assert client.get(reverse("admin:logout")).status_code == 405
    assert client.get(reverse("jobs:list")).status_code == 200


# --- Unguessable permalinks -------------------------------------------------------------------------


def test_run_ids_are_random_uuid4() -> None:
    created = [create_run("demo.echo", {"text": "x"}) for _ in range(20)]
    ids = [run.id for run in created]
    assert all(run_id.version == 4 and run_id.variant == uuid.RFC_4122 for run_id in ids)
    # Time-based ids (uuid1, uuid6, uuid7) of runs created together share their leading bits;
    # random ones do not (a clash among 20 random 32-bit prefixes: about 1 in 20 million).
    assert len({run_id.hex[:8] for run_id in ids}) == len(ids)


GUESSES = ["1", "2", "0", "-1", "00000000-0000-0000-0000-000000000001", "00000000000000000000000000000001"]


@pytest.mark.parametrize("guess", GUESSES)
@pytest.mark.parametrize(("method", "pattern"), RUN_URLS, ids=[pattern for _, pattern in RUN_URLS])
def test_guessed_ids_find_nothing(runs: Runs, method: str, pattern: str, guess: str) -> None:
    client, _ = client_as("superuser")
    before = effect_now(runs)
    assert getattr(client, method)(pattern.format(guess)).status_code == 404
    assert effect_now(runs) == before


@pytest.mark.parametrize("guess", GUESSES)
def test_admin_change_view_of_a_guessed_id_shows_no_run(runs: Runs, guess: str) -> None:
    # Django's admin answers an id that names no object with a redirect to the admin index
    # and a "doesn't exist" message rather than a 404.
    client, _ = client_as("superuser")
    response = client.get(f"/admin/jobs/job/{guess}/change/")
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:index")
