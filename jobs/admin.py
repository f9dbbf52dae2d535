"""Runs in the admin: a read-only record of what ran, how it ended and how much it wrote.

Runs are created by launching a job, never by hand, and their lines are never edited.
"""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from jobs.models import Job


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ["name", "status", "launched_by", "started_at", "duration", "line_count"]
    list_filter = ["status", "name", "created_at"]
    search_fields = ["=id", "name"]
    date_hierarchy = "created_at"
    list_select_related = ["launched_by"]
    readonly_fields = [field.name for field in Job._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="Duration")
    def duration(self, job: Job) -> str:
        duration = job.duration
        return "" if duration is None else f"{duration.total_seconds():.1f} s"
