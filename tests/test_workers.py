"""Runs executed by real worker processes: `manage.py db_worker` (TASK_BACKEND=database)
and `celery worker` (TASK_BACKEND=celery, Redis broker), against the test database.

The test process launches runs through the backend under test (override_settings(TASKS)),
exactly as the admin of a web process configured with TASK_BACKEND would.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.test import override_settings

import config.celery  # noqa: F401 - the Celery app, loaded as a web process with TASK_BACKEND=celery loads it
import jobs
from jobs.launcher import cancel_run
from jobs.models import Job, JobStatus, LogStream
from jobs.running.execution import worker_shutdown_message
from jobs.running.supervisor import Supervisor, process_identity
from jobs.tasks import run_job
from tests.conftest import (
    PROJECT_DIR,
    WAIT,
    LiveServer,
    assert_contiguous,
    launch_in_server,
    log_texts,
    missing_tool,
    start_gunicorn,
    stop_process,
    stop_server,
    stored_lines,
    wait_finished,
    wait_for,
)
from tests.sse_client import HttpStream, line_of, sse_events
from tests.worker_processes import READY, worker_command

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

DATABASE_TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
CELERY_TASKS = {"default": {"BACKEND": "django_tasks_fennel.backend.CeleryBackend"}}


@dataclass
class Worker:
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


StartWorker = Callable[..., Worker]


@pytest.fixture
def start_worker(subprocess_env: dict[str, str], tmp_path: Path) -> Iterator[StartWorker]:
    """Start a worker process of `backend` ("database" or "celery") and wait until it takes
    tasks; every worker still running is stopped after the test."""
    started: list[Worker] = []

    def start(backend: str, *args: str, grace: float = 15.0) -> Worker:
        env = {**subprocess_env, "TASK_BACKEND": backend, "RUNLOG_SHUTDOWN_GRACE": str(grace)}
        if backend == "database":
            args = ("--interval", "0.05", *args)
        command = worker_command(backend, f"worker{len(started)}-{os.getpid()}", *args)
        log_path = tmp_path / f"{backend}-worker-{len(started)}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(command, cwd=PROJECT_DIR, env=env, stdout=log, stderr=subprocess.STDOUT)
        worker = Worker(process, log_path)
        started.append(worker)

        def ready() -> bool:
            if process.poll() is not None:
                pytest.fail(f"the {backend} worker exited with {process.returncode}:\n{worker.log()}")
            return READY[backend] in worker.log()

        wait_for(ready, f"the {backend} worker to start")
        return worker

    yield start
    for worker in started:
        stop_process(worker.process, grace=WAIT)


@pytest.fixture
def celery_broker() -> None:
    """An empty queue on the test Redis database (CELERY_BROKER_URL of tests/settings.py):
    this process's keys are deleted, those of other xdist workers are left alone."""
    from django.conf import settings

    redis = pytest.importorskip("redis")
    try:
        broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
        for key in broker.scan_iter(f"{settings.CELERY_BROKER_KEY_PREFIX}*"):
            broker.delete(key)
    except redis.ConnectionError:
        missing_tool("Redis is not answering at 127.0.0.1:6379 (redis-server)")


def launch_with(tasks: dict[str, Any], name: str, **params: Any) -> Job:
    with override_settings(TASKS=tasks):
        return jobs.launch(name, **params)


def executed_by(job: Job) -> int | None:
    """The pid of the process that ran `job`."""
    job.refresh_from_db()
    return int(job.worker.split(":")[1]) if job.worker else None  # host:pid:token


def wait_running(job: Job) -> None:
    wait_for(lambda: Job.objects.get(pk=job.pk).line_count >= 1, f"{job} to print in its worker")


def tagged_lines(tag: str, count: int) -> list[str]:
    return [f"{tag} line {index}" for index in range(1, count + 1)]


# --- The database backend (db_worker) ---------------------------------------------------------


def test_forty_runs_over_three_db_workers_each_run_once_with_every_line_in_order(start_worker: StartWorker) -> None:
    workers = [start_worker("database") for _ in range(3)]
    runs = [
        launch_with(DATABASE_TASKS, "workers.tagged", tag=f"run{index}", lines=20, interval=0.01) for index in range(40)
    ]

    wait_finished(*runs)
    for index, job in enumerate(runs):
        assert job.status == JobStatus.SUCCEEDED, job.error
        assert log_texts(job) == tagged_lines(f"run{index}", 20)  # once each, in order, no other run's
        assert_contiguous(job)
    executors = {executed_by(job) for job in runs}
    assert executors <= {worker.pid for worker in workers}
    assert len(executors) >= 2, "the runs were not spread over the workers"


def test_a_task_delivered_twice_runs_its_job_once(start_worker: StartWorker) -> None:
    job = launch_with(DATABASE_TASKS, "workers.tagged", tag="once", lines=5)
    with override_settings(TASKS=DATABASE_TASKS):
        run_job.enqueue(str(job.id))  # a second delivery of the same run
    workers = [start_worker("database") for _ in range(2)]

    wait_finished(job)
    wait_for(lambda: any("not queued: not running it again" in w.log() for w in workers), "a worker to skip the run")
    assert job.status == JobStatus.SUCCEEDED
    assert log_texts(job) == tagged_lines("once", 5)


def test_a_viewer_in_gunicorn_gets_every_line_of_a_run_in_a_worker_live(
    start_worker: StartWorker, subprocess_env: dict[str, str], session_cookie: str, tmp_path: Path
) -> None:
    worker = start_worker("database")
    server = start_gunicorn({**subprocess_env, "TASK_BACKEND": "database"}, tmp_path / "gunicorn.log")
    try:
        job = launch_in_server(server.url, session_cookie, "workers.ticking", seconds="1.5", interval="0.02")
        with HttpStream(
            f"{server.url}/jobs/{job.id}/events", headers={"Cookie": session_cookie}, timeout=WAIT
        ) as stream:
            events = list(sse_events(stream))
    finally:
        stop_server(server)
    assert executed_by(job) == worker.pid
    assert job.status == JobStatus.SUCCEEDED
    received = [line_of(event) for event in events if event.event == "message"]
    assert received == stored_lines(job)
    assert events[-1].event == "done"
    # The viewer connected before the run had printed most of its lines: they came live.
    assert len(received) == job.line_count > 50


def test_sigterm_lets_a_run_finish_within_the_grace_period_and_leaves_queued_runs_queued(
    start_worker: StartWorker,
) -> None:
    worker = start_worker("database", grace=30)
    running = launch_with(DATABASE_TASKS, "workers.ticking", seconds=1.0, interval=0.05)
    wait_running(running)

    worker.process.send_signal(signal.SIGTERM)
    queued = launch_with(DATABASE_TASKS, "workers.tagged", tag="later", lines=1)
    assert worker.process.wait(WAIT) == 0

    running.refresh_from_db()
    assert running.status == JobStatus.SUCCEEDED
    assert log_texts(running)[-1] == "done"
    queued.refresh_from_db()
    assert queued.status == JobStatus.QUEUED  # left for another worker
    start_worker("database")
    assert wait_finished(queued).status == JobStatus.SUCCEEDED


def test_sigterm_stops_a_run_that_outlasts_the_grace_period(start_worker: StartWorker) -> None:
    worker = start_worker("database", grace=1)
    job = launch_with(DATABASE_TASKS, "workers.ticking", seconds=60, interval=0.05)
    wait_running(job)

    worker.process.send_signal(signal.SIGTERM)
    assert worker.process.wait(WAIT) == 0

    job.refresh_from_db()
    message = (
        "Interrupted: the worker running it shut down, and the job did not finish within 1 s (RUNLOG_SHUTDOWN_GRACE)."
    )
    assert job.status == JobStatus.FAILED
    assert job.error == message
    assert log_texts(job, LogStream.SYSTEM) == [message]
    assert log_texts(job)[-1] == message
    assert_contiguous(job)


def test_a_run_stuck_past_the_grace_period_is_ended_with_its_lines(start_worker: StartWorker) -> None:
    worker = start_worker("database", grace=0.5)
    job = launch_with(DATABASE_TASKS, "workers.unstoppable", seconds=120)
    wait_running(job)

    worker.process.send_signal(signal.SIGTERM)
    wait_finished(job)
    assert job.status == JobStatus.FAILED
    assert job.error.startswith("Interrupted: the worker running it shut down") and "did not stop" in job.error
    assert log_texts(job) == ["blocking", job.error]
    worker.process.kill()  # its main thread is still in the job's sleep


def test_kill_9_of_a_worker_leaves_its_run_lost_and_never_runs_it_again(start_worker: StartWorker) -> None:
    doomed = start_worker("database")
    job = launch_with(DATABASE_TASKS, "workers.ticking", seconds=60, interval=0.05)
    wait_running(job)

    doomed.process.kill()
    doomed.process.wait()
    survivor = start_worker("database")  # a live Runlog process notices the dead one's run
    wait_finished(job)

    assert job.status == JobStatus.LOST
    texts = log_texts(job)
    assert texts[-1].startswith("Run lost:")
    assert texts[0] == "tick 0" and texts.count("tick 0") == 1  # not run again
    assert_contiguous(job)
    assert executed_by(job) == doomed.pid != survivor.pid


def test_cancel_of_a_queued_run_needs_no_worker(staff_user: Any, subprocess_env: dict[str, str]) -> None:
    job = launch_with(DATABASE_TASKS, "workers.tagged", tag="never", lines=3)

    assert cancel_run(job.id, staff_user) is True

    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED
    assert job.cancelled_by == staff_user
    assert log_texts(job) == ["Cancelled by staff before it started."]
    # Its task, taken later, does not run it.
    command = [sys.executable, "manage.py", "db_worker", "--batch", "--no-startup-delay"]
    env = {**subprocess_env, "TASK_BACKEND": "database"}
    result = subprocess.run(command, cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=WAIT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Job {job.id} is cancelled, not queued: not running it again" in result.stdout + result.stderr
    assert log_texts(job) == ["Cancelled by staff before it started."]


def test_cancel_of_a_run_in_a_worker_stops_it_and_says_who(start_worker: StartWorker, staff_user: Any) -> None:
    start_worker("database")
    job = launch_with(DATABASE_TASKS, "workers.ticking", seconds=60, interval=0.05)
    wait_running(job)

    assert cancel_run(job.id, staff_user) is True

    wait_finished(job)
    assert job.status == JobStatus.CANCELLED
    assert job.cancelled_by == staff_user
    assert log_texts(job)[-1] == "Cancelled by staff."
    assert_contiguous(job)
    assert cancel_run(job.id, staff_user) is False


def test_a_timeout_in_a_worker(start_worker: StartWorker) -> None:
    start_worker("database")
    job = wait_finished(launch_with(DATABASE_TASKS, "workers.slow"))
    assert job.status == JobStatus.FAILED
    assert job.error == "Timed out after 1 s."
    assert log_texts(job) == ["starting", "Timed out after 1 s."]


def test_sigterm_of_gunicorn_leaves_a_workers_run_running_and_its_viewer_resumes(
    start_worker: StartWorker, subprocess_env: dict[str, str], session_cookie: str, tmp_path: Path
) -> None:
    start_worker("database")
    env = {**subprocess_env, "TASK_BACKEND": "database"}
    first = start_gunicorn(env, tmp_path / "first.log", "--workers", "1")
    job = launch_in_server(first.url, session_cookie, "workers.ticking", seconds=4, interval=0.02)
    received = []
    with HttpStream(f"{first.url}/jobs/{job.id}/events", headers={"Cookie": session_cookie}, timeout=WAIT) as stream:
        events = sse_events(stream)
        while len(received) < 20:
            event = next(events)
            if event.event == "message":
                received.append(line_of(event))
        os.kill(first.process.pid, signal.SIGTERM)  # a deploy of the web server
        remaining = list(events)  # the stream ends: the client is to reconnect elsewhere
        assert first.process.wait(WAIT) == 0
    received += [line_of(event) for event in remaining if event.event == "message"]
    assert all(event.event != "done" for event in remaining)
    assert Job.objects.get(pk=job.pk).status == JobStatus.RUNNING

    second: LiveServer = start_gunicorn(env, tmp_path / "second.log", "--workers", "1")
    try:
        headers = {"Cookie": session_cookie, "Last-Event-ID": str(received[-1][0])}
        with HttpStream(f"{second.url}/jobs/{job.id}/events", headers=headers, timeout=WAIT) as stream:
            received += [line_of(event) for event in sse_events(stream) if event.event == "message"]
    finally:
        stop_server(second)
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED
    assert received == stored_lines(job)


def test_runjob_enqueue_hands_the_run_to_a_worker_and_follows_it(
    start_worker: StartWorker, subprocess_env: dict[str, str]
) -> None:
    worker = start_worker("database")
    env = {**subprocess_env, "TASK_BACKEND": "database"}

    def runjob(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "manage.py", "runjob", "--enqueue", *args]
        return subprocess.run(command, cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=WAIT)

    done = runjob("workers.tagged", "tag=cli", "lines=30")
    assert done.returncode == 0, done.stderr
    permalink, *lines = done.stdout.splitlines()
    job = Job.objects.get(pk=permalink.split("/")[2])
    assert lines == tagged_lines("cli", 30)
    assert executed_by(job) == worker.pid

    failed = runjob("demo.fail")
    assert failed.returncode == 1
    assert "demo.fail failed" in failed.stderr
    assert runjob("no.such.job").returncode == 2


# --- The Celery backend ------------------------------------------------------------------------


@pytest.mark.usefixtures("celery_broker")
@pytest.mark.parametrize("pool", ["prefork", "threads"])
def test_celery_workers_run_jobs_with_either_pool(start_worker: StartWorker, pool: str) -> None:
    worker = start_worker("celery", "--pool", pool, "--concurrency", "2")
    runs = [launch_with(CELERY_TASKS, "workers.tagged", tag=f"c{index}", lines=30) for index in range(6)]

    wait_finished(*runs)
    for index, job in enumerate(runs):
        assert job.status == JobStatus.SUCCEEDED, job.error
        assert log_texts(job) == tagged_lines(f"c{index}", 30)
        executor = executed_by(job)
        # prefork runs jobs in the pool's processes, threads in the worker itself
        assert (executor != worker.pid) if pool == "prefork" else (executor == worker.pid)


@pytest.mark.usefixtures("celery_broker")
@pytest.mark.parametrize("pool", ["prefork", "threads"])
def test_celery_warm_shutdown_gives_runs_their_grace_period(start_worker: StartWorker, pool: str) -> None:
    worker = start_worker("celery", "--pool", pool, "--concurrency", "2", grace=3)
    short = launch_with(CELERY_TASKS, "workers.ticking", seconds=1.0, interval=0.05)
    long = launch_with(CELERY_TASKS, "workers.ticking", seconds=60, interval=0.05)
    wait_running(short)
    wait_running(long)

    worker.process.send_signal(signal.SIGTERM)
    assert worker.process.wait(WAIT) == 0, worker.log()

    short.refresh_from_db()
    long.refresh_from_db()
    assert short.status == JobStatus.SUCCEEDED, (short.error, log_texts(short)[-3:])
    assert long.status == JobStatus.FAILED
    with override_settings(RUNLOG_SHUTDOWN_GRACE=3):
        assert long.error == worker_shutdown_message()
    assert log_texts(long)[-1] == long.error
    assert_contiguous(long)


@pytest.mark.usefixtures("celery_broker")
def test_celery_task_delivered_twice_runs_its_job_once(start_worker: StartWorker) -> None:
    job = launch_with(CELERY_TASKS, "workers.tagged", tag="once", lines=5)
    with override_settings(TASKS=CELERY_TASKS):
        run_job.enqueue(str(job.id))
    worker = start_worker("celery", "--pool", "threads", "--concurrency", "2")

    wait_finished(job)
    wait_for(lambda: "not queued: not running it again" in worker.log(), "the worker to skip the second delivery")
    assert job.status == JobStatus.SUCCEEDED
    assert log_texts(job) == tagged_lines("once", 5)


# --- Which processes capture, and runs of a process that went away ----------------------------

CAPTURE_PROBE = """
import sys
import config.wsgi
from jobs.running.capture import StreamRouter
print(isinstance(sys.stdout, StreamRouter))
"""


@pytest.mark.parametrize("backend", ["threads", "database", "celery"])
def test_a_web_process_that_executes_no_job_keeps_its_own_stdout(subprocess_env: dict[str, str], backend: str) -> None:
    env = {**subprocess_env, "TASK_BACKEND": backend}
    probe = subprocess.run(
        [sys.executable, "-c", CAPTURE_PROBE], cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=WAIT
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.splitlines()[-1] == "False"


def test_runs_of_a_shell_that_exited_end_lost_with_the_threads_backend(subprocess_env: dict[str, str]) -> None:
    # jobs.launch() from `manage.py shell`, which exits at once: its runs die with it.
    script = "import jobs; print(jobs.launch('workers.ticking', seconds=60).id)"
    shell = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", script],
        cwd=PROJECT_DIR, env=subprocess_env, capture_output=True, text=True, timeout=WAIT,
    )  # fmt: skip
    assert shell.returncode == 0, shell.stderr
    job = Job.objects.get(pk=shell.stdout.split()[-1])

    supervisor = Supervisor(process_identity())  # any live Runlog process
    supervisor.start()
    try:
        wait_finished(job)
    finally:
        supervisor.stop()
    assert job.status == JobStatus.LOST
    assert log_texts(job)[-1].startswith("Run lost:")
    assert_contiguous(job)
