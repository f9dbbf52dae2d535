"""Django's Tasks framework: built into Django 6 as `django.tasks`, the `django-tasks`
backport (same API, same module layout) on Django 5.2."""

from __future__ import annotations

try:
    from django.tasks import TaskResult, TaskResultStatus, task  # type: ignore[import-not-found,unused-ignore]
    from django.tasks.backends.base import BaseTaskBackend  # type: ignore[import-not-found,unused-ignore]
    from django.tasks.base import Task  # type: ignore[import-not-found,unused-ignore]
    from django.tasks.signals import task_enqueued  # type: ignore[import-not-found,unused-ignore]
    from django.tasks.utils import get_random_id  # type: ignore[import-not-found,unused-ignore]
except ImportError:
    from django_tasks import TaskResult, TaskResultStatus, task
    from django_tasks.backends.base import BaseTaskBackend
    from django_tasks.base import Task
    from django_tasks.signals import task_enqueued
    from django_tasks.utils import get_random_id

__all__ = ["BaseTaskBackend", "Task", "TaskResult", "TaskResultStatus", "get_random_id", "task", "task_enqueued"]
