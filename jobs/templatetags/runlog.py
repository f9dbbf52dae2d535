"""Template filters of Runlog's pages."""

from __future__ import annotations

import re

from django import template
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

register = template.Library()

_CODE = re.compile(r"`([^`\n]+)`")


@register.filter
def description(text: str) -> SafeString:
    """A job's description as a developer writes a docstring: `backticks` are code, and
    line breaks stay. Everything else is escaped text."""
    escaped = escape(text)  # leaves backticks alone
    return mark_safe(_CODE.sub(r"<code>\1</code>", escaped).replace("\n", "<br>"))  # noqa: S308 - escaped above
