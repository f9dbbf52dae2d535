"""The registry of jobs: `@job("name")` registers a function; discovery imports each
installed app's `jobs` module at start-up, the way the admin imports `admin` modules."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from django import forms
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import autodiscover_modules

from jobs.params import clean_parameters, form_for, to_json

JobFunction = TypeVar("JobFunction", bound=Callable[..., Any])


class UnknownJob(LookupError):
    def __init__(self, name: str) -> None:
        self.name = name
        known = ", ".join(sorted(_registry)) or "none"
        super().__init__(f"No job is registered as {name!r}. Registered jobs: {known}.")


@dataclass(frozen=True)
class JobSpec:
    name: str
    func: Callable[..., Any]
    title: str
    description: str
    timeout: float | None
    form_class: type[forms.Form]

    def clean(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Validated Python values for the job function; InvalidParameters if bad."""
        return clean_parameters(self.name, self.form_class, params)

    def to_json(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return to_json(self.clean(params))


_registry: dict[str, JobSpec] = {}


def job(
    name: str,
    *,
    title: str = "",
    description: str = "",
    timeout: float | None = None,
    form: type[forms.Form] | None = None,
) -> Callable[[JobFunction], JobFunction]:
    """Register the decorated function as the job `name`.

    `title` and `description` are shown when launching (the description defaults to the
    docstring); `timeout` is in seconds; `form` replaces the form derived from the signature.
    """
    if not name or name != name.strip():
        raise ImproperlyConfigured(f"Invalid job name {name!r}.")

    def register(func: JobFunction) -> JobFunction:
        existing = _registry.get(name)
        if existing is not None and _qualified(existing.func) != _qualified(func):
            raise ImproperlyConfigured(f"Job name {name!r} is already registered by {_qualified(existing.func)}.")
        _registry[name] = JobSpec(
            name=name,
            func=func,
            title=title or name,
            description=description or inspect.cleandoc(func.__doc__ or ""),
            timeout=timeout,
            form_class=form or form_for(func),
        )
        return func

    return register


def _qualified(func: Callable[..., Any]) -> str:
    return f"{func.__module__}.{func.__qualname__}"


def get(name: str) -> JobSpec:
    try:
        return _registry[name]
    except KeyError:
        raise UnknownJob(name) from None


def unregister(name: str) -> None:
    """Forget the job `name`, so that another function can be registered under it."""
    if _registry.pop(name, None) is None:
        raise UnknownJob(name)


def all_jobs() -> list[JobSpec]:
    return sorted(_registry.values(), key=lambda spec: spec.name)


def autodiscover() -> None:
    autodiscover_modules("jobs")
