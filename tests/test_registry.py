"""The registry and job parameters: @job, the form derived from a signature, launch()."""

from __future__ import annotations

import datetime
import enum
import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any, Literal, Optional

import pytest
from django import forms
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction

import jobs
from jobs import InvalidParameters, UnknownJob, job, registry
from jobs.models import Job, JobStatus
from jobs.tasks_compat import task_enqueued
from tests.conftest import log_texts, run_now, wait_finished

# What the test-only jobs received when they ran, by a key the test passes.
_received: dict[str, dict[str, Any]] = {}


class Colour(enum.Enum):
    RED = "red"
    DARK_BLUE = "dark-blue"


@job("registry_tests.types", title="Every type")
def every_type(
    key: str,
    count: int,
    ratio: float,
    flag: bool,
    day: datetime.date,
    mode: Literal["fast", "careful"],
    colour: Colour,
    limit: int | None,
    note: Optional[str],  # noqa: UP045 - the typing.Optional spelling is supported too
    retries: int = 3,
    scale: float = 1.5,
    label: str = "x",
    verbose: bool = True,
    start: datetime.date = datetime.date(2024, 1, 31),
    level: Literal[1, 2, 3] = 2,
    shade: Colour = Colour.DARK_BLUE,
) -> None:
    """Takes one parameter of every supported type.

    And says so in its docstring."""
    _received[key] = dict(locals())


@job("registry_tests.record")
def record(key: str) -> None:
    _received[key] = {"ran": True}
    print(f"ran {key}")


REQUIRED = {
    "key": "k",
    "count": 7,
    "ratio": 0.25,
    "flag": False,
    "day": datetime.date(2024, 2, 29),
    "mode": "careful",
    "colour": Colour.RED,
    "limit": None,
    "note": None,
}


@pytest.fixture
def scratch_registry() -> Iterator[None]:
    """Jobs a test registers are forgotten after it."""
    before = {spec.name for spec in registry.all_jobs()}
    yield
    for spec in registry.all_jobs():
        if spec.name not in before:
            registry.unregister(spec.name)


def fields() -> dict[str, forms.Field]:
    return registry.get("registry_tests.types").form_class.base_fields


def clean(**params: Any) -> dict[str, Any]:
    return registry.get("registry_tests.types").clean(params)


# --- The derived form --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "field_class"),
    [
        ("count", forms.IntegerField),
        ("ratio", forms.FloatField),
        ("key", forms.CharField),
        ("flag", forms.BooleanField),
        ("day", forms.DateField),
        ("mode", forms.TypedChoiceField),
        ("colour", forms.TypedChoiceField),
        ("limit", forms.IntegerField),
        ("note", forms.CharField),
    ],
)
def test_each_supported_type_gets_its_field(name: str, field_class: type[forms.Field]) -> None:
    assert type(fields()[name]) is field_class


def test_literal_becomes_choices_of_its_values() -> None:
    assert list(fields()["mode"].choices) == [("fast", "fast"), ("careful", "careful")]
    assert list(fields()["level"].choices) == [("1", "1"), ("2", "2"), ("3", "3")]
    # Values come back with their own type, not as the text of the choice.
    assert clean(**{**REQUIRED, "level": "3"})["level"] == 3


def test_enum_becomes_choices_of_its_members() -> None:
    assert list(fields()["colour"].choices) == [("red", "Red"), ("dark-blue", "Dark Blue")]
    assert clean(**{**REQUIRED, "colour": "dark-blue"})["colour"] is Colour.DARK_BLUE
    assert clean(**REQUIRED)["colour"] is Colour.RED


def assert_plain_defaults(values: dict[str, Any]) -> None:
    """The defaults of every_type's parameters other than its enum, which the form shows
    by its value."""
    assert values["retries"] == 3
    assert values["scale"] == 1.5
    assert values["label"] == "x"
    assert values["verbose"] is True
    assert values["start"] == datetime.date(2024, 1, 31)
    assert values["level"] == 2


def test_defaults_are_the_initial_values() -> None:
    initial = {name: field.initial for name, field in fields().items()}
    assert_plain_defaults(initial)
    assert initial["shade"] == "dark-blue"  # the form shows an enum default by its value
    assert initial["count"] is None  # no default, nothing pre-filled


def test_parameters_without_default_are_required() -> None:
    required = {name for name, field in fields().items() if field.required}
    # flag is a checkbox: unticked means False, never "missing". limit and note are Optional.
    assert required == {"key", "count", "ratio", "day", "mode", "colour"}


def test_labels_are_readable() -> None:
    assert registry.get("demo.count").form_class.base_fields["interval"].label == "Interval"


def test_omitted_optional_parameters_take_their_defaults() -> None:
    values = clean(key="k", count=1, ratio=1, day="2024-01-01", mode="fast", colour="red")

    assert_plain_defaults(values)
    assert values["shade"] is Colour.DARK_BLUE
    assert values["flag"] is False
    assert values["limit"] is None
    assert values["note"] is None


def test_text_values_are_converted_like_runjob_gives_them() -> None:
    values = clean(
        key=" spaced ",
        count="7",
        ratio="0.25",
        flag="true",
        day="2024-02-29",
        mode="careful",
        colour="red",
        limit="5",
        note="",
        verbose="false",
    )

    assert values["key"] == " spaced "  # whitespace is the job's business
    assert values["count"] == 7
    assert values["ratio"] == 0.25
    assert values["flag"] is True
    assert values["verbose"] is False
    assert values["day"] == datetime.date(2024, 2, 29)
    assert values["limit"] == 5
    assert values["note"] is None  # Optional[str]: empty means None


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("count", "seven"),
        ("count", "1.5"),
        ("ratio", "abc"),
        ("day", "2024-02-30"),
        ("mode", "slow"),
        ("colour", "green"),
        ("level", "4"),
        ("shade", "RED"),
        ("limit", "x"),
    ],
)
def test_bad_value_is_reported_for_its_field(name: str, value: str) -> None:
    with pytest.raises(InvalidParameters) as raised:
        clean(**{**REQUIRED, name: value})

    errors = raised.value.errors
    assert list(errors) == [name]
    assert errors[name] and all(message for message in errors[name])
    assert raised.value.job_name == "registry_tests.types"
    assert name in str(raised.value)


def test_every_bad_field_is_reported_at_once() -> None:
    with pytest.raises(InvalidParameters) as raised:
        registry.get("registry_tests.types").clean({"count": "x", "ratio": "y"})

    errors = raised.value.errors
    assert errors["count"] == ["Enter a whole number."]
    assert errors["ratio"] == ["Enter a number."]
    for missing in ("key", "day", "mode", "colour"):
        assert errors[missing] == ["This field is required."]


def test_unknown_parameter_names_are_rejected() -> None:
    with pytest.raises(InvalidParameters) as raised:
        registry.get("demo.count").clean({"n": "3", "colour": "red", "intervall": "1"})

    message = " ".join(raised.value.errors["__all__"])
    assert "colour" in message and "intervall" in message
    assert "n, interval" in message  # what the job does take


def test_empty_value_for_a_parameter_with_a_default_does_not_become_none() -> None:
    # Either the default applies or the value is refused; a job annotated `n: int = 10`
    # must never be called with None.
    try:
        values = registry.get("demo.count").clean({"n": ""})
    except InvalidParameters as exc:
        assert "n" in exc.errors
    else:
        assert values["n"] == 10


# --- Registration --------------------------------------------------------------------------------


def test_unknown_job_name_is_a_clear_error() -> None:
    with pytest.raises(UnknownJob) as raised:
        registry.get("registry_tests.nope")

    assert isinstance(raised.value, LookupError)
    assert raised.value.name == "registry_tests.nope"
    message = str(raised.value)
    assert "No job is registered as 'registry_tests.nope'" in message
    assert "demo.count" in message  # it lists what is registered


@pytest.mark.django_db(transaction=True)
def test_launch_of_an_unknown_job_or_bad_parameters_creates_nothing() -> None:
    with pytest.raises(UnknownJob):
        jobs.launch("registry_tests.nope")
    with pytest.raises(InvalidParameters) as raised:
        jobs.launch("demo.count", n="many")

    assert raised.value.errors == {"n": ["Enter a whole number."]}
    assert not Job.objects.exists()


@pytest.mark.usefixtures("scratch_registry")
def test_duplicate_name_with_another_function_is_refused() -> None:
    def first() -> None:
        pass

    def second() -> None:
        pass

    job("registry_tests.dup")(first)
    job("registry_tests.dup")(first)  # the same function again (a module imported twice) is fine

    with pytest.raises(ImproperlyConfigured, match="registry_tests.dup"):
        job("registry_tests.dup")(second)
    assert registry.get("registry_tests.dup").func is first


@pytest.mark.usefixtures("scratch_registry")
def test_an_unregistered_name_can_be_taken_by_another_function() -> None:
    def first() -> None:
        pass

    def second() -> None:
        pass

    job("registry_tests.replaced")(first)
    jobs.unregister("registry_tests.replaced")
    with pytest.raises(UnknownJob):
        registry.get("registry_tests.replaced")
    job("registry_tests.replaced")(second)
    assert registry.get("registry_tests.replaced").func is second
    with pytest.raises(UnknownJob):
        jobs.unregister("registry_tests.never_registered")


def _unannotated(items, count: int = 1) -> None:  # `items` deliberately has no annotation
    pass


@pytest.mark.usefixtures("scratch_registry")
def test_unannotated_parameter_is_text() -> None:
    job("registry_tests.unannotated")(_unannotated)

    assert type(registry.get("registry_tests.unannotated").form_class.base_fields["items"]) is forms.CharField


def _takes_list(items: list[int]) -> None:
    pass


def _takes_union(value: int | str) -> None:
    pass


def _takes_dict(mapping: dict) -> None:  # type: ignore[type-arg]
    pass


def _takes_args(*values: int) -> None:
    pass


def _takes_kwargs(**values: int) -> None:
    pass


@pytest.mark.usefixtures("scratch_registry")
@pytest.mark.parametrize(
    ("func", "mentioned"),
    [
        (_takes_list, "items"),
        (_takes_union, "value"),
        (_takes_dict, "mapping"),
        (_takes_args, "*args"),
        (_takes_kwargs, "**kwargs"),
    ],
)
def test_unsupported_signature_is_refused_at_registration(func: Callable[..., None], mentioned: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=mentioned.replace("*", r"\*")):
        job("registry_tests.unsupported")(func)
    with pytest.raises(UnknownJob):
        registry.get("registry_tests.unsupported")


@pytest.mark.parametrize("name", ["", " padded", "padded "])
def test_invalid_job_name_is_refused(name: str) -> None:
    with pytest.raises(ImproperlyConfigured):
        job(name)


def test_title_and_description_default_to_name_and_docstring() -> None:
    spec = registry.get("registry_tests.types")
    assert spec.title == "Every type"
    assert spec.description == "Takes one parameter of every supported type.\n\nAnd says so in its docstring."

    plain = registry.get("registry_tests.record")
    assert plain.title == "registry_tests.record"
    assert plain.description == ""
    assert plain.timeout is None


@pytest.mark.usefixtures("scratch_registry")
def test_explicit_description_wins_over_the_docstring() -> None:
    def documented() -> None:
        """The docstring."""

    job("registry_tests.described", description="The description.", timeout=5)(documented)

    spec = registry.get("registry_tests.described")
    assert spec.description == "The description."
    assert spec.timeout == 5


class WordForm(forms.Form):
    word = forms.CharField(min_length=3)
    times = forms.IntegerField(required=False, initial=2)

    def clean_word(self) -> str:
        return self.cleaned_data["word"].upper()


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("scratch_registry")
def test_explicit_form_validates_and_feeds_the_job() -> None:
    def shout(key: str = "", word: str = "", times: int = 1) -> None:
        _received[key or "shout"] = {"word": word, "times": times}

    key = uuid.uuid4().hex

    class KeyedWordForm(WordForm):
        key = forms.CharField()

    job("registry_tests.shout", form=KeyedWordForm)(shout)
    spec = registry.get("registry_tests.shout")
    assert spec.form_class is KeyedWordForm

    with pytest.raises(InvalidParameters) as raised:
        jobs.launch("registry_tests.shout", key=key, word="ab")
    assert list(raised.value.errors) == ["word"]

    run = wait_finished(jobs.launch("registry_tests.shout", key=key, word="abc"))
    assert run.status == JobStatus.SUCCEEDED
    # The form's own cleaning and its initial values reach the job.
    assert _received[key] == {"word": "ABC", "times": 2}


@pytest.mark.usefixtures("scratch_registry")
def test_explicit_form_rejects_unknown_parameter_names() -> None:
    def shout(word: str = "") -> None:
        pass

    job("registry_tests.shout", form=WordForm)(shout)

    # A typo in a parameter name (runjob registry_tests.shout wrod=abc) must not go unnoticed.
    with pytest.raises(InvalidParameters):
        registry.get("registry_tests.shout").clean({"word": "abc", "tims": "3"})


# --- launch() and the stored parameters ------------------------------------------------------------


@pytest.fixture
def submitted() -> Iterator[list[uuid.UUID]]:
    """The runs whose task was enqueued, in order (the Tasks framework's task_enqueued)."""
    handed: list[uuid.UUID] = []

    def record(sender: Any, task_result: Any, **kwargs: Any) -> None:
        handed.append(uuid.UUID(task_result.args[0]))

    task_enqueued.connect(record)
    yield handed
    task_enqueued.disconnect(record)


@pytest.mark.django_db(transaction=True)
def test_launch_in_a_transaction_starts_after_commit(submitted: list[uuid.UUID]) -> None:
    key = uuid.uuid4().hex
    with transaction.atomic():
        launched = jobs.launch("registry_tests.record", key=key)
        assert launched.status == JobStatus.QUEUED
        # Other connections (the worker's) cannot see the run yet: it must not be handed over.
        assert submitted == []

    assert submitted == [launched.id]
    wait_finished(launched)
    assert launched.status == JobStatus.SUCCEEDED
    assert _received[key] == {"ran": True}


@pytest.mark.django_db(transaction=True)
def test_launch_in_a_rolled_back_transaction_never_starts(submitted: list[uuid.UUID]) -> None:
    key = uuid.uuid4().hex
    with pytest.raises(RuntimeError), transaction.atomic():
        launched = jobs.launch("registry_tests.record", key=key)
        raise RuntimeError("roll back")

    assert submitted == []
    assert not Job.objects.filter(pk=launched.pk).exists()
    assert key not in _received


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("as_text", [False, True], ids=["python-values", "text-values"])
def test_params_are_stored_as_json_and_reach_the_job_as_python_values(as_text: bool) -> None:
    key = uuid.uuid4().hex
    params: dict[str, Any] = {**REQUIRED, "key": key, "limit": 5, "shade": Colour.RED, "level": 3}
    if as_text:
        # What runjob and an HTML form send.
        params = {**params, "count": "7", "ratio": "0.25", "day": "2024-02-29", "colour": "red", "limit": "5"}
        params |= {"shade": "red", "level": "3", "flag": "false"}
        del params["note"]

    launched = jobs.launch("registry_tests.types", **params)

    stored = Job.objects.get(pk=launched.pk).params
    assert stored == {
        "key": key,
        "count": 7,
        "ratio": 0.25,
        "flag": False,
        "day": "2024-02-29",
        "mode": "careful",
        "colour": "red",
        "limit": 5,
        "note": None,
        "retries": 3,
        "scale": 1.5,
        "label": "x",
        "verbose": True,
        "start": "2024-01-31",
        "level": 3,
        "shade": "red",
    }
    assert json.loads(json.dumps(stored)) == stored

    wait_finished(launched)
    assert launched.status == JobStatus.SUCCEEDED
    received = _received[key]
    assert received["day"] == datetime.date(2024, 2, 29) and type(received["day"]) is datetime.date
    assert received["start"] == datetime.date(2024, 1, 31)
    assert received["colour"] is Colour.RED and received["shade"] is Colour.RED
    assert received["count"] == 7 and type(received["count"]) is int
    assert received["ratio"] == 0.25 and type(received["ratio"]) is float
    assert received["level"] == 3 and type(received["level"]) is int
    assert received["limit"] == 5
    assert received["flag"] is False and received["verbose"] is True
    assert received["note"] is None


# --- The demo jobs ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "demo.count",
        "demo.flood",
        "demo.fail",
        "demo.echo",
        "demo.command",
        "demo.logging",
        "demo.threads",
        "demo.build",
    ],
)
def test_demo_job_is_registered(name: str) -> None:
    spec = registry.get(name)
    assert spec.name == name
    assert spec in registry.all_jobs()
    assert spec.description  # the launch page explains each one


@pytest.mark.django_db(transaction=True)
def test_demo_count() -> None:
    run = run_now("demo.count", n=3, interval=0)

    assert run.status == JobStatus.SUCCEEDED
    assert log_texts(run) == ["Task #0", "Task #1", "Task #2", "Done"]
    run.refresh_from_db()
    assert (run.progress_done, run.progress_total) == (3, 3)


@pytest.mark.django_db(transaction=True)
def test_demo_build_prints_sections_and_colours() -> None:
    run = run_now("demo.build", packages=1, tests=1, delay=0)

    assert run.status == JobStatus.SUCCEEDED
    assert log_texts(run) == [
        "::group::Install dependencies",
        "\x1b[32m✔\x1b[0m package-0 \x1b[2m(cached)\x1b[0m",
        "::endgroup::",
        "::group::Run tests",
        "::group::test_case_0",
        "\x1b[1mtest_case_0\x1b[0m ... \x1b[32mPASSED\x1b[0m",
        "::endgroup::",
        "WARNING demo: 1 test took longer than expected",
        "::endgroup::",
        "\x1b[1;32mBuild succeeded:\x1b[0m 1 passed, 1 packages",
    ]


@pytest.mark.parametrize("params", [{"packages": -1}, {"tests": -2}, {"delay": -0.1}, {"n": -1}])
def test_demo_jobs_refuse_negative_counts(params: dict[str, float]) -> None:
    name = "demo.count" if "n" in params else "demo.build"
    with pytest.raises(InvalidParameters, match="greater than or equal to 0"):
        registry.get(name).clean(params)


@pytest.mark.django_db(transaction=True)
def test_demo_echo() -> None:
    run = run_now("demo.echo", text="hello, world", times=2)

    assert run.status == JobStatus.SUCCEEDED
    assert log_texts(run) == ["hello, world", "hello, world"]
