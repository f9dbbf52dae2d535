"""The benchmark servers' URLs: the project's, plus the idle section's baseline view."""

from django.urls import path

from config.urls import urlpatterns as project_urlpatterns
from tests.bench.baseline_views import seed_stream

urlpatterns = [*project_urlpatterns, path("bench/seed-stream", seed_stream, name="bench-seed-stream")]
