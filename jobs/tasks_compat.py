"""Django's Tasks framework: built into Django 6 as `django.tasks`, the `django-tasks`
backport (same API, same module layout) on Django 5.2."""

from __future__ import annotations

from typing import TYPE_CHECKING

import django

if TYPE_CHECKING or django.VERSION < (6, 0):
    from django_tasks import TaskResult, TaskResultStatus, task
    from django_tasks.backends.base import BaseTaskBackend
    from django_tasks.base import Task
    from django_tasks.signals import task_enqueued
    from django_tasks.utils import get_random_id
else:
    from django.tasks import TaskResult, TaskResultStatus, task
    from django.tasks.backends.base import BaseTaskBackend
    from django.tasks.base import Task
    from django.tasks.signals import task_enqueued
    from django.tasks.utils import get_random_id

__all__ = ["BaseTaskBackend", "Task", "TaskResult", "TaskResultStatus", "get_random_id", "task", "task_enqueued"]
