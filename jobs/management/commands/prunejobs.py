"""manage.py prunejobs --older-than 90d [--status failed,...] [--name NAME] [--dry-run]"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from jobs.retention import expired, parse_age, parse_statuses, prune


class Command(BaseCommand):
    help = (
        "Delete finished runs that ended more than --older-than ago, and their lines, in small "
        "transactions (running jobs keep storing lines meanwhile). Prints what it removed."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--older-than", required=True, metavar="AGE", help="e.g. 90d, 12h, 2w (s, m, h, d, w).")
        parser.add_argument("--status", metavar="S1,S2", help="Only runs with these final statuses.")
        parser.add_argument("--name", action="append", default=[], help="Only runs of this job (repeatable).")
        parser.add_argument("--dry-run", action="store_true", help="Count what would be removed; remove nothing.")

    def handle(
        self, *args: Any, older_than: str, status: str | None, name: list[str], dry_run: bool, **options: Any
    ) -> None:
        try:
            age = parse_age(older_than)
            statuses = parse_statuses(status) if status is not None else []
        except ValueError as exc:
            raise CommandError(str(exc), returncode=2) from None
        pruned = prune(expired(age, statuses, name), dry_run=dry_run)
        verb = "Would remove" if dry_run else "Removed"
        self.stdout.write(f"{verb} {pruned.runs:,} run(s) and {pruned.lines:,} line(s) older than {older_than}.")
