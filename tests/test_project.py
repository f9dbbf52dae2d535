"""Project-level guarantees: settings, SQLite concurrency, the admin bootstrap command."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import close_old_connections, connection, transaction

from jobs.models import Job, JobStatus
from tests.conftest import PROJECT_DIR, assert_contiguous, run_now

sqlite_only = pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite settings")


@sqlite_only
@pytest.mark.django_db
def test_sqlite_uses_wal_and_waits_for_the_write_lock() -> None:
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA journal_mode")
        assert cursor.fetchone()[0] == "wal"
        cursor.execute("PRAGMA busy_timeout")
        assert cursor.fetchone()[0] >= 5000
    assert connection.settings_dict["OPTIONS"]["transaction_mode"] == "IMMEDIATE"


@pytest.mark.django_db(transaction=True)
def test_concurrent_writer_threads_never_see_database_is_locked() -> None:
    """Web requests and job threads write while the log flusher stores a flood."""
    errors: list[BaseException] = []

    def write_transactions() -> None:
        try:
            for _ in range(40):
                with transaction.atomic():
                    job = Job.objects.create(name="tests.concurrent")
                    Job.objects.filter(pk=job.pk).update(line_count=1)
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)
        finally:
            close_old_connections()
            connection.close()

    writers = [threading.Thread(target=write_transactions) for _ in range(8)]
    for writer in writers:
        writer.start()
    flood = run_now("demo.flood", lines=50_000)
    for writer in writers:
        writer.join()

    assert errors == []
    assert Job.objects.filter(name="tests.concurrent").count() == 8 * 40
    assert flood.status == JobStatus.SUCCEEDED
    assert_contiguous(flood)
    assert flood.line_count == 50_000


@pytest.mark.django_db(transaction=True)
def test_ensureadmin_creates_one_login_and_prints_it(manage: Callable[..., Any]) -> None:
    first = manage("ensureadmin")
    assert first.returncode == 0, first.stderr
    assert "user: admin  password: " in first.stdout
    password = first.stdout.split("password: ")[1].split()[0]
    admin = get_user_model().objects.get(username="admin")
    assert admin.is_superuser and admin.check_password(password)

    second = manage("ensureadmin")
    assert second.returncode == 0
    assert "password" not in second.stdout.split("changepassword")[0]
    assert get_user_model().objects.filter(is_superuser=True).count() == 1


def test_secret_key_is_required_when_debug_is_off() -> None:
    # ENV_FILE: ignore a developer's .env (made by `make run`), which has a key.
    env = {
        "PATH": "/usr/bin:/bin",
        "DEBUG": "False",
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "ENV_FILE": "/dev/null",
    }
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr
