"""The viewers' shared reads (jobs.streaming.readers): viewers asking for the same read
while it waits for a thread share it, one asking after it started gets its own, and a
shared chunk of lines still gives each viewer exactly its lines from its own offset."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from django.db import connections

from jobs.streaming import formats, readers
from jobs.streaming.follow import Lines, events_async
from tests.conftest import running_run, store_lines

READERS = 2


@pytest.fixture(autouse=True)
def own_readers(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Reader threads of the test's own, whose connections are closed after it."""
    pool = ThreadPoolExecutor(READERS, thread_name_prefix="test-viewer")
    monkeypatch.setattr(readers, "_readers", pool)
    yield
    everyone = threading.Barrier(READERS)

    def close() -> None:
        everyone.wait(10)  # one on each thread
        connections.close_all()

    for closing in [pool.submit(close) for _ in range(READERS)]:
        closing.result()
    pool.shutdown()


async def _occupy_readers() -> tuple[threading.Event, list[asyncio.Future[Any]]]:
    """Every reader thread busy until the returned event is set: reads queue meanwhile."""
    release = threading.Event()
    busy = [asyncio.ensure_future(readers.read(release.wait)) for _ in range(READERS)]
    await asyncio.sleep(0.05)
    return release, busy


def _counted(calls: list[str], name: str) -> Callable[[], str]:
    def call() -> str:
        calls.append(name)
        return name

    return call


def test_viewers_asking_while_a_read_waits_share_it() -> None:
    async def scenario() -> None:
        calls: list[str] = []
        release, busy = await _occupy_readers()
        first = asyncio.ensure_future(readers.read(_counted(calls, "first"), key="run"))
        second = asyncio.ensure_future(readers.read(_counted(calls, "second"), key="run"))
        other = asyncio.ensure_future(readers.read(_counted(calls, "other"), key="another run"))
        await asyncio.sleep(0.05)
        second.cancel()  # a viewer that leaves does not cancel the read of the others
        release.set()
        assert await first == "first"
        assert await other == "other"
        assert sorted(calls) == ["first", "other"]
        await asyncio.gather(*busy)

    asyncio.run(scenario())


def test_a_viewer_asking_after_the_read_started_reads_again() -> None:
    """Its read must start after it subscribed: one already under way may miss lines."""

    async def scenario() -> None:
        calls: list[str] = []
        started, finish = threading.Event(), threading.Event()

        def slow() -> str:
            calls.append("early")
            started.set()
            finish.wait()
            return "early"

        early = asyncio.ensure_future(readers.read(slow, key="run"))
        await asyncio.get_running_loop().run_in_executor(None, started.wait)
        late = asyncio.ensure_future(readers.read(_counted(calls, "late"), key="run"))
        assert await late == "late"
        finish.set()
        assert await early == "early"
        assert calls == ["early", "late"]

    asyncio.run(scenario())


@pytest.mark.django_db(transaction=True)
def test_a_shared_chunk_gives_each_viewer_its_own_lines() -> None:
    """Three viewers replay at once while the readers are busy: the two at offset 0 share
    one read and one encoding; the one at offset 2 gets lines 3.. only, never 1 and 2."""
    job = running_run()
    store_lines(job, 1, 5)

    async def viewer(after: int) -> list[Lines]:
        return [event for burst in [b async for b in events_async(job.id, after, live=False)] for event in burst]

    async def scenario() -> list[list[Lines]]:
        release, busy = await _occupy_readers()
        viewers = [asyncio.ensure_future(viewer(after)) for after in (0, 0, 2)]
        await asyncio.sleep(0.05)
        release.set()
        await asyncio.gather(*busy)
        return list(await asyncio.gather(*viewers))

    first, second, third = asyncio.run(scenario())
    assert [row[0] for lines in first for row in lines.rows] == [1, 2, 3, 4, 5]
    assert [row[0] for lines in third for row in lines.rows] == [3, 4, 5]
    assert first[0].source is second[0].source is not None
    assert third[0].source is not first[0].source
    encoded = formats.sse(first[0])
    assert formats.sse(second[0]) is encoded  # encoded once, for both
    assert encoded.decode().count("id: ") == 5
    assert formats.sse(third[0]).decode().startswith("id: 3\n")
