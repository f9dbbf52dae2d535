"""Storing batches of log lines: one transaction, one bulk insert, the line counts beside,
and (on PostgreSQL) one announcement of them to the processes that watch the runs.

Django's bulk_create builds and binds every row in Python, too slowly for a flooding job,
so the writer talks to the driver directly (docs/architecture.md has the figures). Table
and column names come from the models, not from literals.

- SQLite: one `INSERT ... SELECT ... FROM json_each(?)` per run of same-stream lines; the
  lines travel as one JSON array. executemany would need the GIL between every row, and
  while a job thread prints, each row then waits for it. json_each is part of SQLite's
  JSON support, which Django's JSONField already requires.
- PostgreSQL: binary COPY, the fastest way in.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from itertools import repeat
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper

from jobs.logstore.notify import Announcement, announce_all
from jobs.logstore.writer import Batch
from jobs.models import Job, LogLine, column_of

_LINE_FIELDS = ("job", "number", "stream", "text", "created_at")
# Binary COPY needs the exact PostgreSQL type of each column, in _LINE_FIELDS order.
_COPY_TYPES = ("uuid", "int4", "varchar", "text", "timestamptz")


def store(batches: Sequence[Batch], using: str = DEFAULT_DB_ALIAS) -> None:
    """Insert the batches' lines, update their jobs and announce them, all in one transaction."""
    connection = connections[using]
    insert = _copy if connection.vendor == "postgresql" else _insert_from_json
    # The inserts use the driver's connection directly: wrap_database_errors turns its
    # errors into Django's, so a lost connection is an OperationalError to retry on.
    with transaction.atomic(using=using), connection.wrap_database_errors:
        # Job rows are locked (line_count) in primary key order, as the supervisor's
        # heartbeat locks them: two transactions locking several rows never deadlock.
        for batch in sorted(batches, key=lambda batch: batch.job_id):
            if batch.segments:
                insert(connection, batch)
            _update_job(batch, using)
            for number, text in batch.updates:
                LogLine.objects.using(using).filter(job_id=batch.job_id, number=number).update(text=text)
        # Delivered at commit: whoever reads the runs on hearing of them sees these lines.
        announce_all((Announcement(batch.job_id, batch.line_count, batch.finished) for batch in batches), using)


def _db_values(batch: Batch, connection: BaseDatabaseWrapper) -> tuple[Any, Any]:
    """The batch's job id and timestamp as this database stores them."""
    job_value = LogLine._meta.get_field("job").get_db_prep_value(batch.job_id, connection)
    created_value = LogLine._meta.get_field("created_at").get_db_prep_value(batch.created_at, connection)
    return job_value, created_value


def _table_and_columns(connection: BaseDatabaseWrapper) -> tuple[str, str]:
    quote = connection.ops.quote_name
    table = quote(LogLine._meta.db_table)
    columns = ", ".join(quote(column_of(LogLine, name)) for name in _LINE_FIELDS)
    return table, columns


def _insert_from_json(connection: BaseDatabaseWrapper, batch: Batch) -> None:
    table, columns = _table_and_columns(connection)
    job_value, created_value = _db_values(batch, connection)
    # Only identifiers from the model, quoted, are formatted in; every value is a parameter.
    sql = f"INSERT INTO {table} ({columns}) SELECT ?, ? + key, ?, value, ? FROM json_each(?)"  # noqa: S608
    number = batch.first_number
    for stream, lines in batch.segments:
        connection.connection.execute(
            sql, (job_value, number, stream, created_value, json.dumps(lines, ensure_ascii=False))
        )
        number += len(lines)


def _copy(connection: BaseDatabaseWrapper, batch: Batch) -> None:
    table, columns = _table_and_columns(connection)
    job_value, created_value = _db_values(batch, connection)
    number = batch.first_number
    with connection.connection.cursor() as cursor:
        with cursor.copy(f"COPY {table} ({columns}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(_COPY_TYPES)
            write_row = copy.write_row
            for stream, lines in batch.segments:
                for row in zip(
                    repeat(job_value), range(number, number + len(lines)), repeat(stream), lines, repeat(created_value)
                ):
                    write_row(row)
                number += len(lines)


def _update_job(batch: Batch, using: str) -> None:
    fields: dict[str, Any] = {"line_count": batch.line_count}
    if batch.progress is not None:
        fields.update(
            progress_done=batch.progress.done,
            progress_total=batch.progress.total,
            progress_message=batch.progress.message,
        )
    Job.objects.using(using).filter(pk=batch.job_id).update(**fields)
