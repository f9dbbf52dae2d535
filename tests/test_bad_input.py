"""Bad input, found by hypothesis, and untrusted output.

- Offsets, Last-Event-ID and limit: any text gets a 400 with a message, or exactly the lines
  after the offset it names; never a 500, a duplicate or a gap (docs/architecture.md, "Contracts").
- Run ids: anything that is not the id of a run is a 404.
- Job parameters of every supported type, from the admin form and from the Python API: a
  run whose stored parameters have the declared types, or a form error; never a crash.
- Job output: whatever a job writes (NUL, bytes that are not UTF-8, lone surrogates, a
  10 MB line, a million carriage returns, ANSI escapes, HTML and script) is stored in full
  and shown as text on every page that shows it. How each kind is stored is tested in
  test_writer, test_capture and test_log_storage; here it is what the pages make of it.

Tests are transactional: the streaming endpoints give their database connection back when
they end, and jobs run in the runner's threads.
"""

from __future__ import annotations

import datetime
import enum
import inspect
import json
import logging
import math
import subprocess
import sys
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any, Literal, Optional
from urllib.parse import quote, quote_from_bytes

import pytest
from django.templatetags.static import static
from django.test import Client
from django.urls import reverse
from django.utils.text import Truncator
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from jobs import InvalidParameters, UnknownJob, job, registry, run_command
from jobs.admin import ERROR_PREVIEW, LOG_TAIL
from jobs.conf import runlog_settings
from jobs.launcher import create_run
from jobs.models import Job, JobStatus, LogLine
from jobs.running.runner import start
from jobs.streaming.endpoints import MAX_LINES_PER_REQUEST
from jobs.views import TAIL_LINES
from tests.conftest import RUN_URLS, assert_contiguous, run_now, wait_finished
from tests.test_endpoints import finished_run, parse_sse, streamed

pytestmark = pytest.mark.django_db(transaction=True)

#: Settings of the property tests: the profile's (tests/conftest.py). The fixtures (a user, a
#: stored run) are made once per test and only read by its examples, so examples share them.
PROPERTY = settings()
#: Fewer examples where each one launches and runs a job.
PROPERTY_RUNS = settings(max_examples=max(10, PROPERTY.max_examples // 2))


@pytest.fixture
def admin(django_user_model: Any) -> Client:
    client = Client()
    client.force_login(django_user_model.objects.create_superuser("root", "root@example.com", "pw"))
    return client


# === Part 6: offsets, Last-Event-ID and limit =====================================================

#: The stored run the offsets are about: every line's text names its number.
LINE_COUNT = 12
LINES = [f"line {n} <b>{n}</b> é" for n in range(1, LINE_COUNT + 1)]

#: Values around the edges of "a non-negative integer", besides hypothesis' own text.
EDGE_VALUES = [
    "", " ", "0", "3", "12", "13", "٣", "３", "²", "+3", "-0", "-1", "1.5", "1e3", "0x10", " 3", "3 ", "\t3\n",
    "1_0", "0003", "000000000000", str(2**31 - 1), str(2**31), str(2**63), str(10**30), "9" * 5000,
    "NaN", "Infinity", "null", "[]", "3,4", "3&offset=4", "%33",
]  # fmt: skip


#: A zero-padded count longer than 12 characters: still the number it spells.
ZERO_PADDED = "0000000000003"


def count_values() -> st.SearchStrategy[str]:
    """Text sent where the endpoints expect a count of lines."""
    return st.one_of(
        st.sampled_from(EDGE_VALUES),
        st.integers(min_value=0, max_value=LINE_COUNT + 3).map(str),
        st.integers(min_value=-(10**30), max_value=10**30).map(str),
        st.text(alphabet="0123456789 +-_.e٣\t", max_size=8),
        st.text(),
    )


def header_values() -> st.SearchStrategy[str]:
    """What a WSGI server can hand Django as a header: the bytes of one header line (no CR,
    LF or NUL) decoded as latin-1, so UTF-8 text such as '٣' arrives as its bytes."""
    return (
        count_values()
        .map(lambda text: text.encode().decode("latin-1"))
        .filter(lambda text: not any(c in text for c in "\r\n\x00"))
    )


@dataclass(frozen=True)
class CountParameter:
    endpoint: str  # the URL name in jobs.urls
    name: str  # the query parameter, or the header
    header: bool = False


COUNT_PARAMETERS = [
    CountParameter("log_text", "offset"),
    CountParameter("events", "offset"),
    CountParameter("events", "Last-Event-ID", header=True),
    CountParameter("lines", "offset"),
    CountParameter("lines", "limit"),
]


def as_count(value: str) -> int | None:
    """The count a value names, read as leniently as Python's int() does (so whatever the
    endpoint accepts must at least mean this); None if it names no non-negative count."""
    text = value.strip()
    if text == "":
        return 0  # absent: the default
    try:
        count = int(text)
    except ValueError:
        # int() refuses numbers of more than 4,300 digits (sys.get_int_max_str_digits), all of
        # which are past any line count.
        return sys.maxsize if text.isdecimal() else None
    return count if count >= 0 else None


def plainly_a_count(value: str) -> bool:
    """Values the endpoint must accept: ASCII digits and nothing else."""
    return value.isascii() and value.isdigit()


def sent_value(response: Any, parameter: CountParameter) -> str:
    """The value as Django received it (after URL or header decoding)."""
    request = response.wsgi_request
    if parameter.header:
        return request.META["HTTP_LAST_EVENT_ID"]
    return request.GET[parameter.name]


def assert_lines_after(response: Any, endpoint: str, after: int, limit: int) -> None:
    """The body is exactly the stored lines after `after` (at most `limit` of them)."""
    expected = list(enumerate(LINES, start=1))[after : after + limit]
    if endpoint == "log_text":
        assert response.status_code == 200
        assert streamed(response).decode() == "".join(f"{text}\n" for _, text in expected)
    elif endpoint == "events":
        if after >= LINE_COUNT:
            # The client has every line of a finished run: 204 stops EventSource.
            assert response.status_code == 204
            return
        assert response.status_code == 200
        _, events = parse_sse(streamed(response))
        lines = [json.loads(data) for kind, data, _ in events if kind == "message"]
        assert [(line["n"], line["text"]) for line in lines] == expected
        assert [int(event_id or 0) for kind, _, event_id in events if kind == "message"] == [n for n, _ in expected]
        assert events[-1][0] == "done"
    else:
        assert response.status_code == 200
        body = json.loads(response.content)
        assert body["line_count"] == LINE_COUNT
        assert [(line["n"], line["text"]) for line in body["lines"]] == expected


def ask(client: Client, run: Job, parameter: CountParameter, value: str | bytes) -> Any:
    url = reverse(f"jobs:{parameter.endpoint}", args=[run.id])
    if parameter.header:
        assert isinstance(value, str)
        return client.get(url, HTTP_LAST_EVENT_ID=value)
    # Bytes go on the wire as they are, percent-encoded: a client may send any.
    encoded = quote_from_bytes(value, safe="") if isinstance(value, bytes) else quote(value, safe="")
    return client.get(f"{url}?{parameter.name}={encoded}")


@pytest.fixture
def stored_run(transactional_db: Any) -> Job:
    return finished_run(LINES)


@pytest.mark.parametrize("parameter", COUNT_PARAMETERS, ids=lambda p: f"{p.endpoint}-{p.name}")
@PROPERTY
@given(data=st.data())
def test_any_count_gets_a_400_or_exactly_the_lines_it_names(
    admin: Client, stored_run: Job, parameter: CountParameter, data: st.DataObject
) -> None:
    strategy = header_values() if parameter.header else st.one_of(count_values(), st.binary(max_size=6))
    response = ask(admin, stored_run, parameter, data.draw(strategy, label=parameter.name))
    value = sent_value(response, parameter)

    if response.status_code == 400:
        assert not plainly_a_count(value), f"{value!r} is a count and must be accepted"
        assert response["Content-Type"] == "text/plain; charset=utf-8"
        message = response.content.decode()
        assert f"{parameter.name} must be a non-negative integer" in message
        assert len(message) < 400  # the value is quoted shortened (50 characters, escaped), not whole
        return
    count = as_count(value)
    assert count is not None, f"{value!r} was accepted but names no count"
    if parameter.name == "limit":
        default_limit = 1000  # jobs.streaming.endpoints.log_lines' default
        limit = min(count, MAX_LINES_PER_REQUEST) if value.strip() else default_limit
        assert_lines_after(response, parameter.endpoint, 0, limit)
    else:
        assert_lines_after(response, parameter.endpoint, min(count, LINE_COUNT), LINE_COUNT)


@pytest.mark.parametrize("parameter", COUNT_PARAMETERS, ids=lambda p: f"{p.endpoint}-{p.name}")
def test_a_zero_padded_count_means_its_number(admin: Client, stored_run: Job, parameter: CountParameter) -> None:
    response = ask(admin, stored_run, parameter, ZERO_PADDED)
    if parameter.name == "limit":
        assert_lines_after(response, parameter.endpoint, 0, int(ZERO_PADDED))
    else:
        assert_lines_after(response, parameter.endpoint, int(ZERO_PADDED), LINE_COUNT)


# === Part 6: run ids ============================================================================

MALFORMED_IDS = [
    "", "1", "-1", "../..", "%00", "null", "<script>", "a" * 5000,
    "00000000-0000-0000-0000-00000000000", "00000000-0000-0000-0000-0000000000000",
    "zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz", "{00000000-0000-0000-0000-000000000000}",
]  # fmt: skip


def path_segment() -> st.SearchStrategy[str]:
    """A run id as it goes into a URL: any text or bytes, percent-encoded."""
    return st.one_of(
        st.sampled_from(MALFORMED_IDS).map(lambda text: quote(text, safe="")),
        st.text().map(lambda text: quote(text, safe="")),
        st.binary(max_size=40).map(lambda raw: quote_from_bytes(raw, safe="")),
        st.uuids().map(lambda unknown: str(unknown).upper()),  # the URLs take lower-case ids only
    )


@pytest.mark.parametrize(("method", "pattern"), RUN_URLS, ids=[f"{m} {p}" for m, p in RUN_URLS])
@PROPERTY
@given(segment=st.one_of(path_segment(), st.uuids(version=4).map(str)))
def test_anything_but_a_runs_id_is_404(admin: Client, stored_run: Job, method: str, pattern: str, segment: str) -> None:
    assume(segment != str(stored_run.id))
    response = getattr(admin, method)(pattern.format(segment))
    assert response.status_code == 404
    assert Job.objects.count() == 1  # not even a re-run of something else


@PROPERTY
@given(segment=path_segment())
def test_the_admin_change_view_of_anything_but_a_runs_id_shows_no_run(admin: Client, segment: str) -> None:
    # Django's admin answers an id that names no object with a redirect to its index ("doesn't
    # exist. Perhaps it was deleted?"); a path that is no object id at all is a 404.
    response = admin.get(f"/admin/jobs/job/{segment}/change/")
    assert response.status_code in (302, 404)
    if response.status_code == 302:
        assert response["Location"].startswith("/admin/")


# === Part 7: job parameters of every type ======================================================


class Colour(enum.Enum):
    RED = "red"
    DARK_BLUE = "dark-blue"


class Size(enum.Enum):
    SMALL = 1
    LARGE = 2


NO_DEFAULT = inspect.Parameter.empty


@dataclass(frozen=True)
class ParameterType:
    """One job, `tests.badinput.<key>`, that takes one parameter `value` of this type."""

    key: str
    annotation: Any
    default: Any = NO_DEFAULT

    @property
    def job_name(self) -> str:
        return f"tests.badinput.{self.key}"


PARAMETER_TYPES = [
    ParameterType("int", int),
    ParameterType("float", float),
    ParameterType("str", str),
    ParameterType("bool", bool),
    ParameterType("date", datetime.date),
    ParameterType("choice", Literal["fast", "careful"]),
    ParameterType("number_choice", Literal[1, 2, 3]),
    ParameterType("enum", Colour),
    ParameterType("number_enum", Size),
    ParameterType("optional_int", int | None),
    ParameterType("optional_float", Optional[float]),  # noqa: UP045 - the typing spelling is supported too
    ParameterType("optional_str", str | None),
    ParameterType("optional_date", datetime.date | None),
    ParameterType("optional_choice", Literal["fast", "careful"] | None),
    ParameterType("optional_enum", Colour | None),
    ParameterType("int_default", int, 7),
    ParameterType("float_default", float, 1.5),
    ParameterType("str_default", str, "x"),
    ParameterType("bool_default", bool, True),
    ParameterType("date_default", datetime.date, datetime.date(2024, 1, 31)),
    ParameterType("choice_default", Literal["fast", "careful"], "careful"),
    ParameterType("enum_default", Colour, Colour.DARK_BLUE),
]


def split_optional(annotation: Any) -> tuple[Any, bool]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return next(arg for arg in typing.get_args(annotation) if arg is not type(None)), True
    return annotation, False


def is_value_of(annotation: Any, value: Any) -> bool:
    """Whether a job annotated `annotation` may be called with `value`."""
    base, optional = split_optional(annotation)
    if value is None:
        return optional
    if typing.get_origin(base) is Literal:
        return any(value == choice and type(value) is type(choice) for choice in typing.get_args(base))
    if isinstance(base, type) and issubclass(base, enum.Enum):
        return isinstance(value, base)
    checks: dict[Any, Callable[[Any], bool]] = {
        bool: lambda v: type(v) is bool,
        int: lambda v: type(v) is int,
        float: lambda v: type(v) is float and math.isfinite(v),
        str: lambda v: type(v) is str and "\x00" not in v and storable(v),
        datetime.date: lambda v: type(v) is datetime.date,
    }
    return checks[base](value)


def storable(text: str) -> bool:
    """Text every database and every page can carry: encodable as UTF-8 (no lone surrogate)."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def is_stored_value_of(annotation: Any, value: Any) -> bool:
    """Whether `value`, read back from Job.params (JSON), is a value of `annotation` as stored."""
    base, optional = split_optional(annotation)
    if value is None:
        return optional
    if base is datetime.date:
        return type(value) is str and datetime.date.fromisoformat(value).isoformat() == value
    if isinstance(base, type) and issubclass(base, enum.Enum):
        return any(value == member.value and type(value) is type(member.value) for member in base)
    if base is float:
        # PostgreSQL's jsonb keeps numbers as numeric and writes 1e20 back as an integer; the
        # job still gets a float (is_value_of checks that in the job).
        return type(value) in (int, float) and math.isfinite(value)
    return is_value_of(base, value)


def _register(parameter_type: ParameterType) -> None:
    def take(value: Any) -> None:
        # The job itself checks what it was called with: a value of the wrong type fails the run.
        if not is_value_of(parameter_type.annotation, value):
            raise TypeError(f"{parameter_type.key} job called with {value!r}")
        print(f"got {value!r}")

    take.__annotations__ = {"value": parameter_type.annotation, "return": None}
    if parameter_type.default is not NO_DEFAULT:
        take.__defaults__ = (parameter_type.default,)
    take.__qualname__ = f"take_{parameter_type.key}"  # the registry tells jobs apart by it
    job(parameter_type.job_name, title=f"Takes {parameter_type.key}")(take)


for _parameter_type in PARAMETER_TYPES:
    _register(_parameter_type)

XSS = "<script>alert(1)</script>"
#: Text a form may get for a parameter, besides hypothesis' own: valid values of each type and
#: near misses (the other-script digits int() and float() take, dates that do not exist).
FORM_VALUES = [
    "", " ", "0", "7", "-3", " 7 ", "٣", "１２", "1.5", "1,5", "1e308", "1e309", "-1e309", "nan", "inf", "1_000",
    "0x1f", "9" * 4000, "9" * 5000, "true", "false", "on", "off", "True", "0", "1", "2", "3", "4",
    "2024-02-29", "2023-02-29", "0001-01-01", "9999-12-31", "10000-01-01", "2024-1-5", "02/29/2024", "٢٠٢٤-٠١-٠٥",
    "fast", "careful", "FAST", "red", "dark-blue", "RED", "DARK_BLUE", XSS, "\x00", "a\x00b", "None", "null",
]  # fmt: skip


def form_values() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(FORM_VALUES), st.text())


def launch_texts() -> st.SearchStrategy[str]:
    """Text a caller of jobs.launch() or `runjob key=value` may pass (but lone surrogates,
    test_a_text_parameter_with_a_lone_surrogate_is_refused_or_made_storable)."""
    return form_values()


def assert_run_of(parameter_type: ParameterType, run: Job) -> None:
    """A created run: its stored parameters have the declared type, re-cleaning them gives
    the same (so a re-run gets the same values), and the job gets a value of its type."""
    # Wait first: a test that fails while a job thread formats its traceback can crash
    # pytest's own report (CPython 3.11.7's ast module is not thread-safe: gh-106905).
    finished = wait_finished(run)
    assert_stored_params_of(parameter_type, run)
    assert finished.status == JobStatus.SUCCEEDED, finished.error


def assert_stored_params_of(parameter_type: ParameterType, run: Job) -> None:
    stored = Job.objects.get(pk=run.pk).params  # as the database gives it back
    assert list(stored) == ["value"]
    assert is_stored_value_of(parameter_type.annotation, stored["value"]), stored
    # Cleaning the stored parameters again (what a re-run does) stores the same value.
    again = registry.get(parameter_type.job_name).to_json(stored)["value"]
    assert same_json_value(again, stored["value"]), (again, stored)


def same_json_value(a: Any, b: Any) -> bool:
    """Equal JSON values, numbers compared as numbers: PostgreSQL's jsonb gives a float such
    as 1e308 back as the integer 10**308."""
    if {type(a), type(b)} == {int, float}:
        return float(a) == float(b)  # (the int was a float: it converts back without overflow)
    return type(a) is type(b) and a == b


def assert_clear_refusal(parameter_type: ParameterType, error: InvalidParameters) -> None:
    assert error.job_name == parameter_type.job_name
    assert set(error.errors) <= {"value", "__all__"} and error.errors
    assert all(message.strip() for messages in error.errors.values() for message in messages)


def post_launch(client: Client, parameter_type: ParameterType, value: str | None) -> Any:
    data = {} if value is None else {"value": value}  # None: the field left out of the POST
    return client.post(reverse("admin:jobs_job_launch_form", args=[parameter_type.job_name]), data)


@pytest.mark.parametrize("parameter_type", PARAMETER_TYPES, ids=lambda p: p.key)
@PROPERTY_RUNS
@given(value=st.one_of(st.none(), form_values()))
def test_admin_launch_form_takes_any_text_for_every_type(
    admin: Client, parameter_type: ParameterType, value: str | None
) -> None:
    before = set(Job.objects.values_list("pk", flat=True))

    response = post_launch(admin, parameter_type, value)

    created = Job.objects.exclude(pk__in=before)
    if response.status_code == 302:
        run = created.get()
        assert response["Location"] == run.get_absolute_url()
        assert run.launched_by is not None
        assert_run_of(parameter_type, run)
    else:
        assert response.status_code == 200
        assert response.context["adminform"].form.errors
        assert not created.exists()
        assert XSS not in response.content.decode()  # the value is shown back escaped


def create(parameter_type: ParameterType, params: dict[str, Any]) -> Job | InvalidParameters:
    """create_run(): the run, or the refusal (after checking it is clear and created nothing)."""
    before = Job.objects.count()
    try:
        return create_run(parameter_type.job_name, params)
    except InvalidParameters as error:
        assert_clear_refusal(parameter_type, error)
        assert Job.objects.count() == before  # a refused launch creates nothing
        return error
    except Exception as error:  # noqa: BLE001 - any other exception is the failure reported
        # Reported without the traceback: its frames hold values pytest cannot show (an int
        # of 5,000 digits has no repr).
        raise AssertionError(f"create_run raised {type(error).__name__}: {error}") from None


@pytest.mark.parametrize("parameter_type", PARAMETER_TYPES, ids=lambda p: p.key)
@PROPERTY_RUNS
@given(
    value=st.one_of(st.just(NO_DEFAULT), launch_texts()),
    extra=st.dictionaries(st.text(min_size=1).filter(lambda name: name != "value"), st.text(), max_size=1),
)
def test_create_run_takes_any_text_for_every_type(
    parameter_type: ParameterType, value: Any, extra: dict[str, str]
) -> None:
    outcome = create(parameter_type, {**extra, **({} if value is NO_DEFAULT else {"value": value})})
    if isinstance(outcome, InvalidParameters):
        assert not extra or "Unknown parameter(s)" in str(outcome)
        return
    assert not extra, "an unknown parameter must be refused"
    assert_run_of(parameter_type, start().run(outcome))


OPTIONAL_CHOICES = [p for p in PARAMETER_TYPES if p.key in ("optional_choice", "optional_enum")]


@pytest.mark.parametrize("via", ["admin form", "create_run"])
@pytest.mark.parametrize("parameter_type", OPTIONAL_CHOICES, ids=lambda p: p.key)
def test_an_optional_choice_left_empty_is_none(admin: Client, parameter_type: ParameterType, via: str) -> None:
    if via == "admin form":
        assert post_launch(admin, parameter_type, "").status_code == 302
        run = Job.objects.get()
    else:
        run = start().run(create_run(parameter_type.job_name, {}))
    assert_run_of(parameter_type, run)
    assert Job.objects.get(pk=run.pk).params == {"value": None}


#: Values of other types than text a Python caller may pass to jobs.launch(); built when
#: used (an int of 5,000 digits has no repr to show in a test id).
NON_TEXT_VALUES: dict[str, Callable[[], Any]] = {
    "0": lambda: 0,
    "1.5": lambda: 1.5,
    "nan": lambda: float("nan"),
    "True": lambda: True,
    "list": lambda: [1],
    "datetime": lambda: datetime.datetime(2024, 2, 29, 12, 30),
    "date": lambda: datetime.date(2024, 2, 29),
    "Colour.RED": lambda: Colour.RED,
    "Size.SMALL": lambda: Size.SMALL,
    "5000-digit int": lambda: 10**5000,
}


NON_TEXT_CASES = [
    pytest.param(parameter_type, value_key, id=f"{parameter_type.key}-{value_key}")
    for parameter_type in PARAMETER_TYPES
    for value_key in NON_TEXT_VALUES
]


@pytest.mark.parametrize(("parameter_type", "value_key"), NON_TEXT_CASES)
def test_create_run_takes_a_value_of_any_type_or_refuses_it(parameter_type: ParameterType, value_key: str) -> None:
    outcome = create(parameter_type, {"value": NON_TEXT_VALUES[value_key]()})
    if not isinstance(outcome, InvalidParameters):
        assert_stored_params_of(parameter_type, outcome)


#: What Python makes of a command-line argument that is not UTF-8 (surrogateescape): a lone surrogate.
LONE_SURROGATE_TEXT = b"caf\xe9".decode("utf-8", "surrogateescape")
TEXT_TYPES = [p for p in PARAMETER_TYPES if split_optional(p.annotation)[0] is str]


def assert_viewable(client: Client, run: Job) -> None:
    for url in (run.get_absolute_url(), reverse("jobs:status", args=[run.id])):
        assert client.get(url).status_code == 200


@pytest.mark.parametrize("parameter_type", TEXT_TYPES, ids=lambda p: p.key)
def test_a_text_parameter_with_a_lone_surrogate_is_refused_or_made_storable(
    admin: Client, parameter_type: ParameterType
) -> None:
    outcome = create(parameter_type, {"value": LONE_SURROGATE_TEXT})
    if isinstance(outcome, InvalidParameters):
        return
    assert_viewable(admin, outcome)
    assert_stored_params_of(parameter_type, outcome)


def test_runjob_with_an_argument_that_is_not_utf8_is_refused_or_runs(admin: Client, manage: Callable[..., Any]) -> None:
    result: subprocess.CompletedProcess[str] = manage("runjob", "demo.echo", b"text=caf\xe9")
    assert "Traceback" not in result.stderr
    assert result.returncode in (0, 2)  # it ran, or it was refused as a bad parameter
    if result.returncode == 0:
        assert_viewable(admin, Job.objects.get())


# --- Unknown job names ---------------------------------------------------------------------------


def job_names() -> st.SearchStrategy[str]:
    return st.one_of(st.text(min_size=1), st.sampled_from(["nosuch.job", "demo", "demo.echo ", "DEMO.ECHO", "../x"]))


@PROPERTY
@given(name=job_names())
def test_an_unknown_job_name_is_a_clear_error_and_a_404(admin: Client, name: str) -> None:
    assume(name not in {spec.name for spec in registry.all_jobs()})
    with pytest.raises(UnknownJob) as raised:
        registry.get(name)
    assert str(raised.value).startswith(f"No job is registered as {name!r}. Registered jobs: ")
    assert "demo.echo" in str(raised.value)  # it says what there is
    with pytest.raises(UnknownJob):
        create_run(name, {})
    assert not Job.objects.exists()

    response = admin.get(f"/admin/jobs/job/launch/{quote(name, safe='')}/")
    assert response.status_code == 404


@pytest.mark.parametrize("name", ["nosuch.job", "nö.such <job>"])
def test_runjob_of_an_unknown_job_exits_2_with_a_message(manage: Callable[..., Any], name: str) -> None:
    result: subprocess.CompletedProcess[str] = manage("runjob", name)
    assert result.returncode == 2
    assert f"No job is registered as {name!r}" in result.stderr
    assert "Traceback" not in result.stderr
    assert not Job.objects.exists()


# === Part 8: untrusted output, shown safely on every page =========================================

#: Output a job may print. Each is stored as it is and must be shown as text, never as markup.
PAYLOADS = [
    "<script>alert(1)</script>",
    "</span></div></td><script>alert(2)</script>",
    "\"><img src=x onerror=alert(3)>",
    "'><svg onload=alert(4)>",
    "<iframe src=javascript:alert(5)></iframe>",
    "{{ request }} {% csrf_token %} &amp; &lt;b&gt;",  # template syntax and entities stay text
    "\x1b[31mred\x1b[0m \x1b]0;title\x07 and ANSI escapes",
    'data: {"n": 1}',  # looks like a Server-Sent Events field
    "\u2028\u2029\x85\x0b\x0c separators that are not newlines",
    "\u202eright-to-left override",
]  # fmt: skip
LABEL = '"><img src=x onerror=alert(7)>'
ERROR = "RuntimeError: <script>alert(8)</script> failed"
HUGE_LINE_CHARS = 10_000_000
PROGRESS_UPDATES = 1_000_000
#: A child process writing bytes that are not UTF-8, a NUL and markup.
CHILD = r"import sys; sys.stdout.buffer.write(b'child \xff\xfe bytes \x00 <script>alert(9)</script>\n')"


def huge_text() -> str:
    """10 MB in which any lost, repeated or reordered stretch changes the text."""
    return "".join(f"{index:09d}<" for index in range(HUGE_LINE_CHARS // 10))


@job("tests.badinput.output", title="Untrusted output")
def untrusted_output(label: str, huge: bool = False) -> None:
    print(label)
    for payload in PAYLOADS:
        print(payload)
    print("nul\x00 and lone \ud83d surrogate")
    sys.stderr.write("<b>stderr</b>\n")
    logging.getLogger("tests.badinput").warning("<script>alert(6)</script>")
    run_command([sys.executable, "-c", CHILD], echo=False)
    if huge:
        print(huge_text())
        write = sys.stdout.write
        for index in range(PROGRESS_UPDATES):
            write(f"\r<progress {index + 1}>")
        write("\n")
    print("after everything")
    raise RuntimeError(ERROR.removeprefix("RuntimeError: "))


def expected_log(huge: bool) -> list[tuple[str, str]]:
    """The (stream, text) lines the job stores before its traceback."""
    huge_lines: list[tuple[str, str]] = []
    if huge:
        # The 10 MB line, wrapped at RUNLOG_MAX_LINE_LENGTH, then the last state of the progress line.
        text, width = huge_text(), runlog_settings.MAX_LINE_LENGTH
        huge_lines = [("stdout", text[start : start + width]) for start in range(0, len(text), width)]
        huge_lines.append(("stdout", f"<progress {PROGRESS_UPDATES}>"))
    return [
        ("stdout", LABEL),
        *[("stdout", payload) for payload in PAYLOADS],
        ("stdout", "nul\ufffd and lone \ufffd surrogate"),
        ("stderr", "<b>stderr</b>"),
        ("log", "WARNING tests.badinput: <script>alert(6)</script>"),
        ("stdout", "child \ufffd\ufffd bytes \ufffd <script>alert(9)</script>"),
        *huge_lines,
        ("stdout", "after everything"),
    ]


@dataclass
class Shown:
    """A run as stored: what every page must show."""

    run: Job
    texts: list[str]


def run_untrusted_output(huge: bool) -> Shown:
    run = run_now("tests.badinput.output", label=LABEL, huge=huge)
    run.refresh_from_db()
    rows = list(LogLine.objects.filter(job=run).order_by("number").values_list("stream", "text"))
    # The whole log is stored: the bad output, everything after it, then the traceback.
    expected = expected_log(huge)
    assert rows[: len(expected)] == expected
    traceback_lines = rows[len(expected) :]
    assert {stream for stream, _ in traceback_lines} == {"stderr"}
    assert traceback_lines[0][1] == "Traceback (most recent call last):"
    assert traceback_lines[-1][1] == ERROR
    assert_contiguous(run)
    assert (run.status, run.error, run.params) == (JobStatus.FAILED, ERROR, {"label": LABEL, "huge": huge})
    return Shown(run, [text for _, text in rows])


# --- Reading pages -----------------------------------------------------------------------------

Attributes = dict[str, str | None]
#: Picks the elements whose text a check reads: a name for their texts, or None.
Picker = Callable[[str, Attributes], str | None]


@dataclass
class PageScan(HTMLParser):
    """Every element of an HTML page, inline script code, and the texts of the elements
    `pick` names, which must hold text only: an element inside one is markup that came from
    the data shown."""

    pick: Picker
    elements: list[tuple[str, Attributes]] = field(default_factory=list)
    texts: dict[str, list[str]] = field(default_factory=dict)
    nested: list[tuple[str, Attributes]] = field(default_factory=list)
    scripts: list[str] = field(default_factory=list)
    _text: list[str] | None = None
    _text_element: tuple[str, str] = ("", "")  # (its tag, its name)
    _script: list[str] | None = None

    def __post_init__(self) -> None:
        super().__init__(convert_charrefs=True)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.elements.append((tag, attributes))
        if self._text is not None:
            self.nested.append((tag, attributes))
        elif (name := self.pick(tag, attributes)) is not None:
            self._text, self._text_element = [], (tag, name)
        if tag == "script":
            self._script = []

    def handle_endtag(self, tag: str) -> None:
        text_tag, name = self._text_element
        if self._text is not None and tag == text_tag:
            self.texts.setdefault(name, []).append("".join(self._text))
            self._text = None
        if tag == "script" and self._script is not None:
            self.scripts.append("".join(self._script))
            self._script = None

    def handle_data(self, data: str) -> None:
        if self._text is not None:
            self._text.append(data)
        if self._script is not None:
            self._script.append(data)


def picker(**names: tuple[str, str, str] | str) -> Picker:
    """Elements by tag, or by (tag, attribute, value): e.g. lines=("span", "class", "tx"),
    where a class attribute matches any one of its classes."""

    def matches(tag: str, attributes: Attributes, wanted: tuple[str, str, str] | str) -> bool:
        if isinstance(wanted, str):
            return tag == wanted
        wanted_tag, attribute, value = wanted
        found = attributes.get(attribute) or ""
        return tag == wanted_tag and (value in found.split() if attribute == "class" else found == value)

    return lambda tag, attributes: next((n for n, wanted in names.items() if matches(tag, attributes, wanted)), None)


#: Picks no element: the page is only checked for markup from the data shown.
NOTHING = picker()


def scan(response: Any, pick: Picker = NOTHING) -> PageScan:
    """Parse an HTML page and check that nothing in it is markup the output made: every
    payload calls alert(), so a handler, element or script holding 'alert' came from one."""
    assert response.status_code == 200
    assert response["Content-Type"] == "text/html; charset=utf-8"
    page = PageScan(pick)
    page.feed(response.content.decode())
    page.close()
    # The admin shows a boolean field as an icon: the one element a text element may hold.
    admin_icons = static("admin/img/icon-")
    nested = [
        (tag, attributes)
        for tag, attributes in page.nested
        if not (attributes.get("src") or "").startswith(admin_icons)
    ]
    assert nested == [], "markup inside a text element"
    for tag, attributes in page.elements:
        for name, value in attributes.items():
            # An attribute may hold the text (a form field's value), but no handler or URL may.
            assert not (name.startswith("on") and "alert" in (value or "")), (tag, name, value)
            assert not (value or "").lower().startswith("javascript:"), (tag, name, value)
        assert tag not in ("img", "svg", "iframe") or "alert" not in str(attributes), (tag, attributes)
    assert not any("alert" in script for script in page.scripts)
    return page


def assert_tail(shown_texts: list[str], stored: list[str], tail: int) -> None:
    """A page that shows the last `tail` lines shows exactly those, as text."""
    assert len(shown_texts) == min(len(stored), tail)
    assert shown_texts == stored[len(stored) - len(shown_texts) :]


def check_job_page(client: Client, shown: Shown) -> None:
    page = scan(
        client.get(shown.run.get_absolute_url()),
        picker(lines=("span", "class", "tx"), codes="code", error=("p", "id", "error")),
    )
    assert_tail(page.texts["lines"], shown.texts, TAIL_LINES)
    assert LABEL in page.texts["codes"]  # the parameter
    assert page.texts["error"] == [ERROR]


def check_job_list(client: Client, shown: Shown) -> None:
    # The filters are shown back in the form: as text, not markup.
    page = scan(client.get(reverse("jobs:list"), {"name": LABEL, "status": XSS}))
    values = [attributes.get("value") for tag, attributes in page.elements if attributes.get("name") == "name"]
    assert values == [LABEL]


def check_log_txt(client: Client, shown: Shown) -> None:
    response = client.get(reverse("jobs:log_text", args=[shown.run.id]))
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    assert response["X-Content-Type-Options"] == "nosniff"  # no browser sniffs it into HTML
    assert streamed(response).decode() == "".join(f"{text}\n" for text in shown.texts)


def check_events(client: Client, shown: Shown) -> None:
    response = client.get(reverse("jobs:events", args=[shown.run.id]))
    assert response["Content-Type"] == "text/event-stream; charset=utf-8"
    assert response["X-Content-Type-Options"] == "nosniff"
    _, events = parse_sse(streamed(response))
    texts = [json.loads(data)["text"] for kind, data, _ in events if kind == "message"]
    assert texts == shown.texts
    done = json.loads(events[-1][1])
    assert (events[-1][0], done["error"], done["params"]) == ("done", ERROR, shown.run.params)


def check_lines(client: Client, shown: Shown) -> None:
    response = client.get(reverse("jobs:lines", args=[shown.run.id]), {"limit": MAX_LINES_PER_REQUEST})
    assert response["Content-Type"] == "application/json"
    assert [line["text"] for line in json.loads(response.content)["lines"]] == shown.texts[:MAX_LINES_PER_REQUEST]


def check_status(client: Client, shown: Shown) -> None:
    response = client.get(reverse("jobs:status", args=[shown.run.id]))
    assert response["Content-Type"] == "application/json"
    status = json.loads(response.content)
    assert (status["error"], status["params"]) == (ERROR, shown.run.params)


def check_admin_changelist(client: Client, shown: Shown) -> None:
    url = reverse("admin:jobs_job_changelist")
    page = scan(client.get(url), picker(error=("td", "class", "field-error_preview")))
    assert page.texts["error"] == [Truncator(ERROR).chars(ERROR_PREVIEW)]
    scan(client.get(url, {"q": XSS}))  # the search, shown back


def check_admin_change_view(client: Client, shown: Shown) -> None:
    page = scan(
        client.get(reverse("admin:jobs_job_change", args=[shown.run.id])),
        picker(lines=("td", "class", "runlog-text"), fields=("div", "class", "readonly")),
    )
    assert_tail(page.texts["lines"], shown.texts, LOG_TAIL)
    assert ERROR in page.texts["fields"]
    assert json.dumps(shown.run.params, ensure_ascii=False) in page.texts["fields"]


PAGES: dict[str, Callable[[Client, Shown], None]] = {
    "job page": check_job_page,
    "job list": check_job_list,
    "log.txt": check_log_txt,
    "events": check_events,
    "lines": check_lines,
    "status": check_status,
    "admin changelist": check_admin_changelist,
    "admin change view": check_admin_change_view,
}


@pytest.mark.parametrize("page", PAGES)
def test_untrusted_output_is_stored_and_shown_as_text(admin: Client, page: str) -> None:
    PAGES[page](admin, run_untrusted_output(huge=False))


@pytest.mark.slow
def test_huge_untrusted_output_is_stored_and_shown_as_text_on_every_page(admin: Client) -> None:
    # The same and a 10 MB line and a million progress updates, in one run: the pages that
    # show the whole log (log.txt, events) or its tail (the job page, the admin) show it all.
    shown = run_untrusted_output(huge=True)
    for check in PAGES.values():
        check(admin, shown)
