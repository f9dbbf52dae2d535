"""Runs in the admin: a read-only record of what ran, how it ended and what it printed, plus
the pages that launch a registered job and the actions that cancel or re-run runs.

Runs are created by launching a job, never by hand, and neither they nor their lines are
ever edited here: LogLine is not registered at all.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.utils.text import Truncator

from jobs import launcher, registry
from jobs.display import format_duration
from jobs.models import Job, JobQuerySet
from jobs.params import InvalidParameters
from jobs.registry import UnknownJob

#: Lines of a run's log shown on its admin page; the whole log is a link away.
LOG_TAIL = 200
#: Characters of a run's error shown in the list (the change view has all of it).
ERROR_PREVIEW = 80


def _runs(count: int) -> str:
    return f"{count} run" if count == 1 else f"{count} runs"


@admin.register(Job)
class JobAdmin(admin.ModelAdmin[Job]):
    list_display = ["name", "status_badge", "launched_by", "started_at", "duration", "lines", "error_preview", "page"]
    list_filter = ["status", "name", "created_at"]
    # An id matches from its start: the 8 characters that page titles show find the run.
    search_fields = ["^id", "name"]
    date_hierarchy = "created_at"
    ordering = ["-created_at"]
    list_select_related = ["launched_by"]
    actions = ["cancel_runs", "rerun_runs"]
    fieldsets = [
        (None, {"fields": ["id", "name", "params", "status", "error", "launched_by", "line_count"]}),
        ("Times", {"fields": ["created_at", "started_at", "finished_at", "duration"]}),
        ("Progress", {"fields": ["progress_done", "progress_total", "progress_message"]}),
        ("Run control", {"fields": ["worker", "heartbeat_at", "cancel_requested", "cancelled_by", "timeout"]}),
    ]
    readonly_fields = [field.name for field in Job._meta.fields] + ["duration"]
    # The run page links to the job page itself; "View on site" would be a second such link.
    view_on_site = False

    # --- Permissions ---------------------------------------------------------------------------

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Runs are created by launching a job (launch_form_view), never from a blank form.
        return False

    def has_change_permission(self, request: HttpRequest, obj: Job | None = None) -> bool:
        # Model-level change permission is what the cancel and re-run actions need, but no
        # run is ever edited: without object-level change permission the admin shows the
        # change view read-only, without save buttons, and refuses a POST to it with a 403
        # (saving would also write stale copies of fields the runner is updating).
        if obj is not None:
            return False
        return super().has_change_permission(request)

    def has_delete_permission(self, request: HttpRequest, obj: Job | None = None) -> bool:
        # A run still going would lose the lines it writes after the delete: stop it first.
        if obj is not None and not obj.is_finished:
            return False
        return super().has_delete_permission(request, obj)

    def has_launch_permission(self, request: HttpRequest) -> bool:
        # The permission the built-in add view would need; that view stays disabled.
        return request.user.has_perm(f"{self.opts.app_label}.add_{self.opts.model_name}")

    # --- The list ------------------------------------------------------------------------------

    @admin.display(description="Status", ordering="status")
    def status_badge(self, job: Job) -> str:
        return format_html(
            '<span class="runlog-status runlog-status-{}">{}</span>', job.status, job.get_status_display()
        )

    @admin.display(description="Duration")
    def duration(self, job: Job) -> str:
        return format_duration(job.duration)

    @admin.display(description="Lines", ordering="line_count")
    def lines(self, job: Job) -> int:
        return job.line_count

    @admin.display(description="Error")
    def error_preview(self, job: Job) -> str:
        return Truncator(job.error).chars(ERROR_PREVIEW)

    @admin.display(description="Page")
    def page(self, job: Job) -> str:
        return format_html('<a href="{}">Open</a>', job.get_absolute_url())

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        extra_context = {**(extra_context or {}), "has_launch_permission": self.has_launch_permission(request)}
        return super().changelist_view(request, extra_context)

    # --- The read-only run page ------------------------------------------------------------------

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Job | None = None,
    ) -> HttpResponse:
        if obj is not None:
            # The newest lines, shown oldest first; the (job, number) unique index serves this.
            tail = obj.lines.order_by("-number").only("number", "stream", "text")[:LOG_TAIL]
            context.update(
                log_lines=list(reversed(tail)),
                log_tail=LOG_TAIL,
                job_url=obj.get_absolute_url(),
                log_url=reverse("jobs:log_text", args=[obj.id]),
            )
        return super().render_change_form(request, context, add, change, form_url, obj)

    # --- Actions -------------------------------------------------------------------------------

    @admin.action(description="Cancel selected runs", permissions=["change"])
    def cancel_runs(self, request: HttpRequest, queryset: JobQuerySet) -> None:
        selected = queryset.count()
        # cancel_run() is False for a run that finished meanwhile: count what was really asked.
        unfinished = queryset.unfinished().values_list("id", flat=True)
        cancelled = sum(launcher.cancel_run(job_id, request.user) for job_id in unfinished)
        if cancelled:
            self.message_user(request, f"Asked {_runs(cancelled)} to stop.", messages.SUCCESS)
        if selected > cancelled:
            self.message_user(request, f"{_runs(selected - cancelled)} had already finished.", messages.WARNING)

    @admin.action(description="Re-run selected runs", permissions=["change"])
    def rerun_runs(self, request: HttpRequest, queryset: JobQuerySet) -> None:
        launched = 0
        for job in queryset:
            try:
                launcher.relaunch(job, user=request.user)
            except (UnknownJob, InvalidParameters) as error:
                # One run that cannot be re-run (job gone, parameters no longer valid) must
                # not stop the others.
                self.message_user(request, f"Could not re-run {job}: {error}", messages.ERROR)
            else:
                launched += 1
        if launched:
            self.message_user(request, f"Launched {_runs(launched)} again.", messages.SUCCESS)

    # --- Launching -----------------------------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        info = self.opts.app_label, self.opts.model_name
        # Before the defaults: their "<path:object_id>/" would take "launch/" for a run's id.
        return [
            path("launch/", self.admin_site.admin_view(self.launch_list_view), name="{}_{}_launch".format(*info)),
            path(
                "launch/<path:name>/",
                self.admin_site.admin_view(self.launch_form_view),
                name="{}_{}_launch_form".format(*info),
            ),
            *super().get_urls(),
        ]

    def launch_list_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_launch_permission(request):
            raise PermissionDenied
        context = {"title": "Launch a job", "specs": registry.all_jobs()}
        return self._render_launch_page(request, "admin/jobs/job/launch_list.html", context)

    def launch_form_view(self, request: HttpRequest, name: str) -> HttpResponse:
        if not self.has_launch_permission(request):
            raise PermissionDenied
        try:
            spec = registry.get(name)
        except UnknownJob as error:
            raise Http404(str(error)) from None
        if request.method == "POST":
            # The form itself validates the POST: an unticked checkbox is absent from it and
            # means False, which the form knows and a plain dict of the POST would not.
            form = spec.form_class(request.POST)
            if form.is_valid():
                try:
                    job = launcher.launch(spec.name, user=request.user, **form.cleaned_data)
                except InvalidParameters as error:
                    for field, field_messages in error.errors.items():
                        form.add_error(field if field in form.fields else None, field_messages)
                else:
                    self.message_user(request, f"Launched {spec.title}.", messages.SUCCESS)
                    return HttpResponseRedirect(job.get_absolute_url())
        else:
            form = spec.form_class()
        context = {
            "title": f"Launch {spec.title}",
            "spec": spec,
            "adminform": _admin_form(form, self),
            # The admin's helpers are written for model forms; a plain form has all they use.
            "errors": helpers.AdminErrorList(form, []),  # type: ignore[arg-type]
            "media": self.media + form.media,
        }
        return self._render_launch_page(request, "admin/jobs/job/launch_form.html", context)

    def _render_launch_page(self, request: HttpRequest, template: str, context: dict[str, Any]) -> HttpResponse:
        # What every admin page has (each_context), plus what the breadcrumbs need.
        return TemplateResponse(
            request,
            template,
            {
                **self.admin_site.each_context(request),
                "opts": self.opts,
                "has_view_permission": self.has_view_permission(request),
                **context,
            },
        )


def _admin_form(form: forms.Form, model_admin: JobAdmin) -> helpers.AdminForm:
    """The parameter form in the admin's fieldset/form-row layout, as on a change form."""
    fieldsets = [(None, {"fields": list(form.fields)})] if form.fields else []
    return helpers.AdminForm(form, fieldsets, prepopulated_fields={}, model_admin=model_admin)  # type: ignore[arg-type]
