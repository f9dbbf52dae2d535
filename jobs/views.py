"""The HTML pages: the list of runs, a run's page (its permalink) and re-run.

The log endpoints that feed the page live (events, lines, log.txt, status, cancel) are in
jobs.streaming.endpoints; these views only render what is stored and hand the URLs to log.js.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any
from uuid import UUID

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from jobs import registry
from jobs.display import format_duration
from jobs.launcher import relaunch
from jobs.models import Job, JobStatus, LogLine, LogStream
from jobs.params import InvalidParameters
from jobs.streaming import formats, search
from jobs.streaming.endpoints import MAX_LINES_PER_REQUEST

#: Lines rendered with the page; earlier ones are fetched on demand (log.js) or read in log.txt.
TAIL_LINES = 2000
#: Runs per page of the list.
PAGE_SIZE = 50


class JobFilterForm(forms.Form):
    """The list's filters, read from the query string; an invalid value filters nothing."""

    status = forms.ChoiceField(choices=[("", "Any status"), *JobStatus.choices], required=False)
    name = forms.CharField(required=False, max_length=200, label="Name contains")


def line_times(lines: list[LogLine]) -> tuple[str, str]:
    """The lines' times for log.js, compactly: the first one (ISO 8601), and each line's as
    milliseconds after it, comma-separated."""
    if not lines:
        return "", ""
    first = lines[0].created_at
    offsets = (round((line.created_at - first) / timedelta(milliseconds=1)) for line in lines)
    return first.isoformat(), ",".join(map(str, offsets))


def page_settings() -> dict[str, Any]:
    """What log.js must agree on with the server, from the server's own constants."""
    return {
        "pageLines": TAIL_LINES,
        "fetchLimit": MAX_LINES_PER_REQUEST,
        "searchPage": search.DEFAULT_MATCHES,
        "retryMs": formats.SSE_RETRY_MS,
        "streams": LogStream.values,
        "statuses": dict(JobStatus.choices),
    }


def display_value(value: Any) -> str:
    """A parameter value as stored: strings as they are, anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value)


@require_GET
@permission_required("jobs.view_job")
def job_list(request: HttpRequest) -> HttpResponse:
    form = JobFilterForm(request.GET)
    runs = Job.objects.select_related("launched_by").order_by("-created_at")
    if form.is_valid():
        if status := form.cleaned_data["status"]:
            runs = runs.filter(status=status)
        if name := form.cleaned_data["name"].strip():
            runs = runs.filter(name__icontains=name)
    page = Paginator(runs, PAGE_SIZE).get_page(request.GET.get("page"))
    rows = [(run, format_duration(run.duration)) for run in page]
    filtered = form.is_valid() and any(form.cleaned_data.values())
    return render(request, "jobs/job_list.html", {"form": form, "page": page, "rows": rows, "filtered": filtered})


@require_GET
@permission_required("jobs.view_job")
def job_detail(request: HttpRequest, job_id: UUID) -> HttpResponse:
    job = get_object_or_404(Job.objects.select_related("launched_by", "cancelled_by"), pk=job_id)
    try:
        spec: registry.JobSpec | None = registry.get(job.name)
    except registry.UnknownJob:
        spec = None
    # Only the tail: a run may have millions of lines. Lines stored after line_count was
    # read are fine to include; log.js resumes after the last one rendered.
    before_tail = max(job.line_count - TAIL_LINES, 0)
    lines = list(job.lines.filter(number__gt=before_tail).order_by("number")[:TAIL_LINES])
    last_rendered = lines[-1].number if lines else before_tail
    params = job.params.items() if isinstance(job.params, dict) else []
    duration = job.duration
    time_zero, time_offsets = line_times(lines)
    context = {
        "job": job,
        "spec": spec,
        "params": [(key, display_value(value)) for key, value in params],
        "duration": format_duration(duration),
        "duration_seconds": None if duration is None else duration.total_seconds(),
        "lines": lines,
        "time_zero": time_zero,
        "time_offsets": time_offsets,
        # log.js asks for lines in batches; ?batch=0 keeps one line per event (for comparison).
        "batch_events": request.GET.get("batch") != "0",
        "before_tail": before_tail,
        "earlier_page": min(before_tail, TAIL_LINES),
        "last_rendered": last_rendered,
        "page_settings": page_settings(),
    }
    return render(request, "jobs/job_detail.html", context)


@require_POST
@permission_required("jobs.change_job", raise_exception=True)
def rerun_job(request: HttpRequest, job_id: UUID) -> HttpResponse:
    job = get_object_or_404(Job, pk=job_id)
    try:
        new_run = relaunch(job, user=request.user)
    except (registry.UnknownJob, InvalidParameters) as error:
        messages.error(request, f"Could not re-run this job: {error}")
        return redirect(job)
    messages.success(request, f"Launched a new run of {job.name} with the same parameters.")
    return redirect(new_run)
