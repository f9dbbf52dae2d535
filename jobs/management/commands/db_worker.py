"""manage.py db_worker: django-tasks-db's worker, as a Runlog worker process.

The same command and options as django-tasks-db's; before it takes its first task, the
process installs Runlog's capture and starts its supervisor (heartbeats, cancel requests,
timeouts, and marking lost the runs of workers that died). A SIGTERM gives the run in
progress RUNLOG_SHUTDOWN_GRACE seconds to finish (jobs.running.runner).
"""

from __future__ import annotations

from typing import Any

from django_tasks_db.management.commands.db_worker import Command as DatabaseWorkerCommand

from jobs.running.runner import get_runner


class Command(DatabaseWorkerCommand):
    help = "Run a database background worker that executes Runlog's runs (TASK_BACKEND=database)."

    def handle(self, *args: Any, **options: Any) -> None:
        get_runner().start()
        super().handle(*args, **options)
