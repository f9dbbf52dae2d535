"""manage.py runjob NAME key=value ...: run a job in the foreground, echoing its log."""

from __future__ import annotations

import sys
import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from jobs import registry
from jobs.launcher import create_run
from jobs.logstore.hub import JobChanged, Subscription, hub, rows_of
from jobs.models import Job, JobStatus, LogLine, LogStream
from jobs.params import InvalidParameters
from jobs.running.runner import start

#: Exit code for a bad command line (unknown job, bad parameter), as argparse uses.
USAGE_ERROR = 2


class Command(BaseCommand):
    help = (
        "Run a registered job in the foreground with the same capture as a launched run. "
        "Prints the run's permalink path first, then its lines as they come. Exits 0 if "
        "the run succeeded, 1 otherwise, 2 for an unknown job or a bad parameter. "
        "Ctrl-C cancels the run."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="The registered job name, e.g. demo.count.")
        parser.add_argument("params", nargs="*", metavar="key=value", help="The job's parameters.")

    def handle(self, *args: Any, name: str, params: list[str], **options: Any) -> None:
        try:
            job = create_run(name, _parse_params(params))
        except (registry.UnknownJob, InvalidParameters) as exc:
            raise CommandError(str(exc), returncode=USAGE_ERROR) from None
        self.stdout.write(job.get_absolute_url())
        self.stdout.flush()

        runner = start()
        self._echoed = 0  # the last line number echoed
        subscription = hub.subscribe(job.id)
        worker = threading.Thread(target=runner.run, args=(job,), name="runlog-runjob")
        worker.start()
        try:
            self._echo_until_done(job, subscription, worker)
        except KeyboardInterrupt:
            self.stderr.write("Cancelling the run...")
            runner.cancel(job.id)
            self._echo_until_done(job, subscription, worker)
        finally:
            hub.unsubscribe(subscription)
        job.refresh_from_db()
        summary = f"{job.name} {job.status}"
        if job.error:
            summary += f": {job.error}"
        self.stderr.write(summary)
        if job.status != JobStatus.SUCCEEDED:
            sys.exit(1)

    def _echo_until_done(self, job: Job, subscription: Subscription, worker: threading.Thread) -> None:
        while True:
            running = worker.is_alive()
            subscription.wait(timeout=0.2)
            items, overflowed = subscription.take()
            if overflowed:
                self._echo_stored(job)  # we fell behind the hub; the database has every line
            for item in items:
                if not isinstance(item, JobChanged):
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


def _parse_params(pairs: list[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CommandError(f"Parameters are key=value; got {pair!r}.", returncode=USAGE_ERROR)
        params[key] = value
    return params
