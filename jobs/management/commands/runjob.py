"""manage.py runjob NAME key=value ...: run a job in the foreground, echoing its log; with
--enqueue, hand it to the task backend and follow it wherever it runs."""

from __future__ import annotations

import sys
import threading
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any
from urllib.parse import urljoin

from django.core.management.base import BaseCommand, CommandError, CommandParser

from jobs import registry
from jobs.conf import runlog_settings
from jobs.launcher import cancel_run, create_run, launch
from jobs.logstore.hub import StoredLines, Subscription, hub, rows_of
from jobs.logstore.writer import Batch
from jobs.models import Job, JobStatus, LogLine, LogStream
from jobs.params import InvalidParameters
from jobs.running.runner import start
from jobs.streaming.poller import poller

#: Exit code for a bad command line (unknown job, bad parameter), as argparse uses.
USAGE_ERROR = 2


class Command(BaseCommand):
    help = (
        "Run a registered job in the foreground with the same capture as a launched run. "
        "Prints the run's permalink path first, then its lines as they come. Exits 0 if "
        "the run succeeded, 1 otherwise, 2 for an unknown job or a bad parameter. "
        "Ctrl-C cancels the run. With --enqueue the run is handed to the task backend "
        "(TASK_BACKEND) instead of running in this process, and followed until it ends."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="The registered job name, e.g. demo.count.")
        parser.add_argument("params", nargs="*", metavar="key=value", help="The job's parameters.")
        parser.add_argument(
            "--enqueue",
            action="store_true",
            help="Let the task backend's workers run the job, and follow its lines here.",
        )

    def handle(self, *args: Any, name: str, params: list[str], enqueue: bool, **options: Any) -> None:
        try:
            if enqueue:
                job = launch(name, **_parse_params(params))
            else:
                runner = start()
                job = create_run(name, _parse_params(params), owner=runner.identity)
        except (registry.UnknownJob, InvalidParameters) as exc:
            raise CommandError(str(exc), returncode=USAGE_ERROR) from None
        self.stdout.write(urljoin(runlog_settings.BASE_URL, job.get_absolute_url()))
        self.stdout.flush()

        self._echoed = 0  # the last line number echoed
        subscription = hub.subscribe(job.id)
        if enqueue:
            poller.ensure_started()  # the run's lines come from the database, as a viewer's do
            done = partial(_finished, job.id)
        else:
            worker = threading.Thread(target=runner.run, args=(job,), name="runlog-runjob")
            worker.start()
            done = partial(_thread_ended, worker)
        try:
            self._echo_until_done(job, subscription, done)
        except KeyboardInterrupt:
            self.stderr.write("Cancelling the run...")
            cancel_run(job.id)
            self._echo_until_done(job, subscription, done)
        finally:
            hub.unsubscribe(subscription)
        job.refresh_from_db()
        summary = f"{job.name} {job.status}"
        if job.error:
            summary += f": {job.error}"
        self.stderr.write(summary)
        if job.status != JobStatus.SUCCEEDED:
            sys.exit(1)

    def _echo_until_done(self, job: Job, subscription: Subscription, done: Callable[[], bool]) -> None:
        while True:
            running = not done()
            subscription.wait(timeout=0.2)
            items, overflowed = subscription.take()
            if overflowed:
                self._echo_stored(job)  # we fell behind the hub; the database has every line
            for item in items:
                if isinstance(item, (Batch, StoredLines)):  # lines; the rest is news of the row
                    for number, stream, _, text in rows_of(item):
                        self._echo(number, stream, text)
            if not running and not items:
                self._echo_stored(job)  # anything the hub could not hand us
                return

    def _echo_stored(self, job: Job) -> None:
        lines = LogLine.objects.filter(job=job, number__gt=self._echoed).order_by("number")
        for number, stream, text in lines.values_list("number", "stream", "text").iterator(chunk_size=5000):
            self._echo(number, stream, text)

    def _echo(self, number: int, stream: str, text: str) -> None:
        if number <= self._echoed:
            return
        out = self.stdout if stream == LogStream.STDOUT else self.stderr
        out.write(text, ending="\n")
        self._echoed = number


def _thread_ended(thread: threading.Thread) -> bool:
    return not thread.is_alive()


def _finished(job_id: uuid.UUID) -> bool:
    return Job.objects.filter(pk=job_id, status__in=JobStatus.finished_values()).exists()


def _parse_params(pairs: list[str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CommandError(f"Parameters are key=value; got {pair!r}.", returncode=USAGE_ERROR)
        params[key] = value
    return params
