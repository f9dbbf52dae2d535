"""Job parameters: a Django form derived from the job function's signature.

Supported annotations: int, float, str, bool, datetime.date, Literal[...] (choices), an
Enum, and any of them `| None`. A parameter with a default is optional. Django validators
in an `Annotated[...]` apply to the field, e.g. `n: Annotated[int, MinValueValidator(0)]`. The same form
validates a launch from the admin, from `runjob key=value`, and from `jobs.launch()`, and
turns the stored JSON params back into Python values when the run starts.
"""

from __future__ import annotations

import datetime
import enum
import inspect
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

from django import forms
from django.core.exceptions import ImproperlyConfigured
from django.core.validators import MaxValueValidator, MinValueValidator


class InvalidParameters(ValueError):
    """Raised by launch() with the form's errors, one message per bad field."""

    def __init__(self, job_name: str, errors: Mapping[str, list[str]]) -> None:
        self.job_name = job_name
        self.errors = dict(errors)
        details = "; ".join(
            f"{field}: {' '.join(messages)}" if field != "__all__" else " ".join(messages)
            for field, messages in self.errors.items()
        )
        super().__init__(f"Invalid parameters for {job_name}: {details}")


class JobParametersForm(forms.Form):
    """Base of every derived parameter form: an empty value means the job's default."""

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        for name, value in list(cleaned.items()):
            if isinstance(value, str) and not _storable(value):
                self.add_error(name, "This text has characters that are not valid Unicode (lone surrogates).")
        for name, field in self.fields.items():
            if (
                cleaned.get(name) in (None, "")
                and field.initial is not None
                and not isinstance(field, forms.BooleanField)
            ):
                cleaned[name] = field.initial
        return cleaned


def _storable(text: str) -> bool:
    """False for text with lone surrogates, which no database stores and no page can show."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def form_for(func: Callable[..., Any]) -> type[JobParametersForm]:
    """Build the parameter form class of a job function from its signature."""
    hints = typing.get_type_hints(func, include_extras=True)
    fields: dict[str, forms.Field] = {}
    for parameter in inspect.signature(func).parameters.values():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            raise ImproperlyConfigured(f"Job function {func.__qualname__} cannot take *args or **kwargs.")
        fields[parameter.name] = _field_for(parameter, hints.get(parameter.name, str))
    return type(f"{func.__name__.title()}ParametersForm", (JobParametersForm,), fields)


def _field_for(parameter: inspect.Parameter, annotation: Any) -> forms.Field:
    annotation, validators = _strip_annotated(annotation)
    annotation, optional = _strip_optional(annotation)
    annotation, inner_validators = _strip_annotated(annotation)
    field = _plain_field_for(parameter, annotation, optional)
    for validator in validators + inner_validators:
        field.validators.append(validator)
        if isinstance(validator, (MinValueValidator, MaxValueValidator)):
            # The browser's number input enforces the limit too.
            field.widget.attrs["min" if isinstance(validator, MinValueValidator) else "max"] = validator.limit_value
    return field


def _strip_annotated(annotation: Any) -> tuple[Any, list[Callable[[Any], None]]]:
    """The type inside `Annotated[type, ...]`, and the validators (callables) among its extras."""
    if typing.get_origin(annotation) is not typing.Annotated:
        return annotation, []
    inner, *extras = typing.get_args(annotation)
    return inner, [extra for extra in extras if callable(extra)]


def _plain_field_for(parameter: inspect.Parameter, annotation: Any, optional: bool) -> forms.Field:
    has_default = parameter.default is not inspect.Parameter.empty
    options: dict[str, Any] = {
        "required": not (has_default or optional),
        "label": parameter.name.replace("_", " ").capitalize(),
    }
    if has_default and parameter.default is not None:
        default = parameter.default
        options["initial"] = default.value if isinstance(default, enum.Enum) else default
    if typing.get_origin(annotation) is typing.Literal:
        values = typing.get_args(annotation)
        return forms.TypedChoiceField(
            choices=[(str(value), str(value)) for value in values],
            coerce=_coerce_to_one_of(values),
            empty_value=None,  # an optional choice left empty is None, not ""
            **options,
        )
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return forms.TypedChoiceField(
            choices=[(str(member.value), member.name.replace("_", " ").title()) for member in annotation],
            coerce=lambda value, enum_type=annotation: _enum_member(enum_type, value),
            empty_value=None,
            **options,
        )
    if annotation is bool:
        options["required"] = False  # an unticked box is False, not missing
        return forms.BooleanField(**options)
    field_classes: dict[Any, type[forms.Field]] = {
        int: forms.IntegerField,
        float: forms.FloatField,
        str: forms.CharField,
        datetime.date: forms.DateField,
    }
    if annotation not in field_classes:
        raise ImproperlyConfigured(
            f"Parameter {parameter.name!r} has an unsupported type {annotation!r}; "
            "use int, float, str, bool, date, Literal[...] or an Enum, or give the job a form."
        )
    if annotation is str:
        options["strip"] = False  # a job may care about whitespace it was given
        options["empty_value"] = None if optional else ""
    return field_classes[annotation](**options)


def _strip_optional(annotation: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        if len(args) == 1:
            return args[0], len(args) < len(typing.get_args(annotation))
    return annotation, False


def _coerce_to_one_of(values: tuple[Any, ...]) -> Callable[[str], Any]:
    by_text = {str(value): value for value in values}

    def coerce(text: Any) -> Any:
        return by_text[str(text)]

    return coerce


def _enum_member(enum_type: type[enum.Enum], value: Any) -> enum.Enum:
    if isinstance(value, enum_type):
        return value
    for member in enum_type:
        if str(member.value) == str(value):
            return member
    raise forms.ValidationError(f"{value!r} is not one of the choices.")


def clean_parameters(job_name: str, form_class: type[forms.Form], params: Mapping[str, Any]) -> dict[str, Any]:
    """Validate raw parameters (strings or Python values); InvalidParameters if bad."""
    data = {name: _as_form_data(value) for name, value in params.items()}
    unknown = sorted(name for name in data if name not in form_class.base_fields)
    if unknown:
        expected = ", ".join(form_class.base_fields) or "none"
        message = f"Unknown parameter(s): {', '.join(unknown)}. This job takes: {expected}."
        raise InvalidParameters(job_name, {"__all__": [message]})
    # A parameter left out takes the job's default (which the form holds as `initial`).
    for name, field in form_class.base_fields.items():
        if name not in data and field.initial is not None:
            data[name] = _as_form_data(field.initial)
    form = form_class(data=data)
    try:
        valid = form.is_valid()
    except (TypeError, ValueError, AttributeError, OverflowError) as exc:
        # Form fields expect text; launch() may be given any Python value (a date field
        # given an int, an int too long to print) and some fields fail on it instead of
        # reporting it.
        raise InvalidParameters(job_name, {"__all__": [f"A parameter has a value of the wrong type: {exc}"]}) from None
    if not valid:
        raise InvalidParameters(
            job_name, {field: [str(error) for error in errors] for field, errors in form.errors.items()}
        )
    return dict(form.cleaned_data)


def _as_form_data(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    return value


def to_json(values: Mapping[str, Any]) -> dict[str, Any]:
    """Cleaned values as JSON-storable data (dates as ISO strings, enums by value)."""
    stored: dict[str, Any] = {}
    for name, value in values.items():
        if isinstance(value, datetime.date):
            value = value.isoformat()
        elif isinstance(value, enum.Enum):
            value = value.value
        stored[name] = value
    return stored
