"""The job pages (jobs.views) and the endpoints that serve logs to browsers and scripts
(jobs.streaming.endpoints). URL names are used in templates, the admin and tests."""

from django.urls import path

from jobs import views
from jobs.streaming import endpoints

app_name = "jobs"

urlpatterns = [
    path("", views.job_list, name="list"),
    path("<uuid:job_id>/", views.job_detail, name="detail"),
    path("<uuid:job_id>/rerun", views.rerun_job, name="rerun"),
    path("<uuid:job_id>/log.txt", endpoints.log_text, name="log_text"),
    path("<uuid:job_id>/events", endpoints.log_events, name="events"),
    path("<uuid:job_id>/lines", endpoints.log_lines, name="lines"),
    path("<uuid:job_id>/search", endpoints.search_log, name="search"),
    path("<uuid:job_id>/status", endpoints.job_status, name="status"),
    path("<uuid:job_id>/cancel", endpoints.cancel_job, name="cancel"),
]
