"""The hub and the poller under a crowd of viewers: a crowd's viewers pause between takes
(threads) or wake in rounds (coroutines) so that a flooding run wakes them in bursts, and
the poller tells the viewers of a run of another process what changed, so that they need
not each read its row again."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from typing import Any

import pytest
from django.utils import timezone

from jobs.logstore.hub import (
    ASYNC_MAX_PAUSE,
    MAX_PAUSE,
    WAKEUPS_PER_SECOND,
    JobChanged,
    JobState,
    LiveHub,
    StoredLines,
    Subscription,
)
from jobs.models import Job
from jobs.streaming.follow import Lines, Plan, Progress, Read, Status, Wait, follow
from jobs.streaming.poller import Poller
from tests.conftest import running_run, store_lines


def crowd_of(hub: LiveHub, job_id: uuid.UUID, viewers: int) -> list[Subscription]:
    return [hub.subscribe(job_id) for _ in range(viewers)]


def first_numbers(viewer: Subscription) -> list[int]:
    """The number of the first line of each batch the viewer takes."""
    return [item.rows[0][0] for item in published(viewer)]


def stored_lines(job_id: uuid.UUID, first: int, last: int) -> StoredLines:
    now = timezone.now()
    return StoredLines(job_id, [(number, "stdout", now, f"line {number}") for number in range(first, last + 1)])


def test_a_lone_viewer_does_not_wait_for_lines_to_gather() -> None:
    hub = LiveHub()
    job_id = uuid.uuid4()
    (viewer,) = crowd_of(hub, job_id, 1)
    assert viewer.pause() <= 0.001
    for number in (1, 2):
        hub.publish(stored_lines(job_id, number, number))
        assert viewer.wait(5)
        assert first_numbers(viewer) == [number]


def test_a_crowd_lets_a_flood_gather_between_takes() -> None:
    """500 viewers of a run: each pauses MAX_PAUSE after a take, and what the run published
    meanwhile (here 20 batches) comes in one take instead of 20 wake-ups."""
    hub = LiveHub()
    job_id = uuid.uuid4()
    viewers = crowd_of(hub, job_id, 500)
    viewer = viewers[0]
    assert viewer.pause() == MAX_PAUSE
    hub.publish(stored_lines(job_id, 1, 1))
    assert viewer.wait(5)
    took_at = time.monotonic()  # before the take, which starts the pause
    viewer.take()

    def flood() -> None:
        for number in range(2, 22):
            hub.publish(stored_lines(job_id, number, number))

    publisher = threading.Thread(target=flood)
    publisher.start()
    publisher.join()
    assert viewer.wait(5)
    assert time.monotonic() - took_at >= MAX_PAUSE
    items, overflowed = viewer.take()
    assert [item.rows[0][0] for item in items] == list(range(2, 22))
    assert not overflowed


def test_a_paused_viewer_still_times_out_on_time() -> None:
    hub = LiveHub()
    job_id = uuid.uuid4()
    viewer = crowd_of(hub, job_id, 500)[0]
    viewer.take()
    assert not viewer.wait(0.01)  # the heartbeat's timeout bounds the pause too


def test_the_pause_follows_the_number_of_viewers() -> None:
    hub = LiveHub()
    job_id = uuid.uuid4()
    viewers = crowd_of(hub, job_id, 200)
    assert viewers[0].pause() == pytest.approx(200 / WAKEUPS_PER_SECOND)
    for viewer in viewers[1:]:
        hub.unsubscribe(viewer)
    assert viewers[0].pause() == pytest.approx(1 / WAKEUPS_PER_SECOND)


def test_a_lone_coroutine_wakes_at_once_for_each_item() -> None:
    hub = LiveHub()
    job_id = uuid.uuid4()
    (viewer,) = crowd_of(hub, job_id, 1)

    async def follow_two() -> list[int]:
        numbers = []
        for number in (1, 2):
            asyncio.get_running_loop().call_soon(hub.publish, stored_lines(job_id, number, number))
            assert await viewer.wait_async(5)
            numbers += first_numbers(viewer)
        return numbers

    assert asyncio.run(follow_two()) == [1, 2]


def test_a_crowd_of_coroutines_takes_a_flood_in_a_few_rounds() -> None:
    """1,000 coroutine viewers of a run, and a flood of 20 batches published from another
    thread: the first batch wakes them all in one round, and the rest, published meanwhile,
    come in the next rounds (one per ASYNC_MAX_PAUSE at most), not in a wake-up per batch."""
    hub = LiveHub()
    job_id = uuid.uuid4()
    viewers = crowd_of(hub, job_id, 1000)
    flood_times: list[float] = []

    def flood() -> None:
        flood_times.append(time.monotonic())
        for number in range(1, 21):
            hub.publish(stored_lines(job_id, number, number))
        flood_times.append(time.monotonic())

    async def watch(viewer: Subscription) -> list[list[int]]:
        takes: list[list[int]] = []
        while sum(len(numbers) for numbers in takes) < 20:
            assert await viewer.wait_async(5)
            takes.append(first_numbers(viewer))
        return takes

    async def crowd_and_flood() -> list[list[list[int]]]:
        watching = [asyncio.ensure_future(watch(viewer)) for viewer in viewers]
        await asyncio.sleep(0.05)  # every viewer waits
        publisher = threading.Thread(target=flood)
        publisher.start()
        takes = await asyncio.gather(*watching)
        publisher.join()
        return takes

    takes = asyncio.run(crowd_and_flood())
    flood_started, flood_ended = flood_times
    # A round at the first batch, one per pause while the flood lasts, and one after it.
    most_rounds = 2 + (flood_ended - flood_started) / ASYNC_MAX_PAUSE
    assert most_rounds < 20  # else the flood was too slow to tell rounds from wake-ups per batch
    for viewer_takes in takes:
        assert [number for numbers in viewer_takes for number in numbers] == list(range(1, 21))
        assert len(viewer_takes) <= most_rounds


def test_the_rounds_of_a_crowd_of_coroutines_are_a_pause_apart() -> None:
    """A crowd of 1,000 (one of them waiting): a batch wakes the waiting viewer at once, and
    the next batch, published as soon as it has taken the first, ASYNC_MAX_PAUSE later."""
    hub = LiveHub()
    job_id = uuid.uuid4()
    viewer, *_ = crowd_of(hub, job_id, 1000)

    async def two_takes() -> list[float]:
        taken_at = []
        for number in (1, 2):
            asyncio.get_running_loop().call_soon(hub.publish, stored_lines(job_id, number, number))
            assert await viewer.wait_async(5)
            assert first_numbers(viewer) == [number]
            taken_at.append(time.monotonic())
        return taken_at

    first, second = asyncio.run(two_takes())
    assert second - first >= ASYNC_MAX_PAUSE * 0.9


def test_a_waiting_coroutine_times_out_after_its_timeout() -> None:
    hub = LiveHub()
    (viewer,) = crowd_of(hub, uuid.uuid4(), 1)

    async def timed_wait() -> tuple[bool, float]:
        started = time.monotonic()
        return await viewer.wait_async(0.2), time.monotonic() - started

    woken, waited = asyncio.run(timed_wait())
    assert not woken
    assert waited >= 0.2


def test_a_coroutine_that_left_is_no_longer_woken() -> None:
    """A viewer whose client left is cancelled while it waits: the round that follows finds
    nothing to wake, and the others of its crowd still wake."""
    hub = LiveHub()
    job_id = uuid.uuid4()
    leaving, staying = crowd_of(hub, job_id, 2)

    async def leave_then_publish() -> bool:
        waiting = asyncio.ensure_future(leaving.wait_async(5))
        await asyncio.sleep(0.01)
        waiting.cancel()
        hub.unsubscribe(leaving)
        asyncio.get_running_loop().call_soon(hub.publish, stored_lines(job_id, 1, 1))
        return await staying.wait_async(5)

    assert asyncio.run(leave_then_publish())
    assert first_numbers(staying) == [1]


# --- the poller -----------------------------------------------------------------------------------


def published(viewer: Subscription) -> list[Any]:
    items, overflowed = viewer.take()
    assert not overflowed
    return items


@pytest.mark.django_db
def test_the_poller_publishes_lines_then_the_change_that_counts_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("jobs.streaming.poller.FETCH_LIMIT", 10)
    hub = LiveHub()
    poller = Poller(hub)
    job = running_run()
    viewer = hub.subscribe(job.id)

    assert not poller.poll({job.id})  # first sight: its viewers read what is stored themselves
    (first,) = published(viewer)
    assert isinstance(first, JobChanged) and first.state is not None
    assert first.state.line_count == 0

    store_lines(job, 1, 25)
    Job.objects.filter(pk=job.pk).update(progress_done=25, progress_total=100)
    # 25 new lines, 10 per fetch: the change waits until its lines are all published.
    assert poller.poll({job.id})
    assert [type(item) for item in published(viewer)] == [StoredLines]
    assert poller.poll({job.id})
    assert [type(item) for item in published(viewer)] == [StoredLines]
    assert not poller.poll({job.id})
    lines, change = published(viewer)
    assert [row[0] for row in lines.rows] == list(range(21, 26))
    assert isinstance(change, JobChanged) and change.state is not None
    assert (change.state.line_count, change.state.progress_done, change.state.progress_total) == (25, 25, 100)

    assert not poller.poll({job.id})  # nothing changed: nothing published
    assert published(viewer) == []


@pytest.mark.django_db
def test_the_poller_publishes_nothing_of_a_run_this_process_started_running_meanwhile() -> None:
    """The poller chose the run while another process ran it, and this one started running
    it before the read was published: the read may be older than what the run has already
    published here (a progress would go back), so it is dropped."""
    hub = LiveHub()
    poller = Poller(hub)
    job = running_run()
    viewer = hub.subscribe(job.id)
    assert not poller.poll({job.id})
    published(viewer)
    store_lines(job, 1, 3)
    Job.objects.filter(pk=job.pk).update(progress_done=3, progress_total=10)

    hub.run_started_here(job.id)
    assert not poller.poll({job.id})
    assert published(viewer) == [JobChanged(job.id)]  # the runner's news only

    hub.run_ended_here(job.id)
    poller.poll({job.id})
    *_, change = published(viewer)
    assert isinstance(change, JobChanged) and change.state is not None and change.state.progress_done == 3


# --- the follow plan, fed by hand -------------------------------------------------------------------


def start_following(job: Job) -> tuple[Any, Any]:
    """The follow plan of `job` from line 0, run up to its first wait for the hub."""
    plan = follow(job.id, 0)
    step = next(plan)
    while not isinstance(step, Wait):
        step = plan.send(step.call() if isinstance(step, Read) else None)
    return plan, step


def job_changed(job: Job, **changes: Any) -> JobChanged:
    state = {
        "status": job.status, "error": job.error, "cancel_requested": job.cancel_requested,
        "line_count": job.line_count, "progress_done": job.progress_done,
        "progress_total": job.progress_total, "progress_message": job.progress_message,
    }  # fmt: skip
    now = time.monotonic()
    return JobChanged(job.id, JobState(**{**state, **changes}), read_started=now, read_at=now)


@pytest.mark.django_db
def test_a_viewer_takes_the_pollers_news_without_reading_the_run_again() -> None:
    job = running_run()
    plan, _ = start_following(job)
    news = [stored_lines(job.id, 1, 3), job_changed(job, line_count=3, progress_done=3, progress_total=10)]
    lines = plan.send((news, False))
    assert isinstance(lines, Lines) and [row[0] for row in lines.rows] == [1, 2, 3]
    progress = plan.send(None)
    assert progress == Progress(3, 10, "")
    assert isinstance(plan.send(None), Wait)  # and no Read of the run's row


def following_at_progress_1_of_20(job: Job) -> Plan:
    """The run's progress saved as 1 of 20, then a viewer's plan that has read the run and
    sent that progress, waiting for news (`job` is refreshed)."""
    Job.objects.filter(pk=job.pk).update(progress_done=1, progress_total=20)
    job.refresh_from_db()
    plan = follow(job.id, 0)
    step = next(plan)
    assert isinstance(step, Read)
    assert isinstance(plan.send(step.call()), Status)
    assert plan.send(None) == Progress(1, 20, "")
    assert isinstance(plan.send(None), Wait)
    return plan


@pytest.mark.django_db
def test_a_viewer_ignores_the_pollers_news_read_before_its_own_read_of_the_run() -> None:
    """The poller read the run just before a viewer came (its progress not yet saved) and
    published it just after the viewer read the run: the viewer keeps its newer progress."""
    job = running_run()
    news_read_at = time.monotonic()
    plan = following_at_progress_1_of_20(job)
    state = job_changed(job, progress_done=None, progress_total=None).state
    stale = JobChanged(job.id, state, news_read_at, news_read_at)
    assert isinstance(plan.send(([stale], False)), Wait)  # no progress sent back to none
    newer = job_changed(job, progress_done=2)
    assert plan.send(([newer], False)) == Progress(2, 20, "")


@pytest.mark.django_db
def test_a_viewer_reads_the_run_again_for_news_read_while_it_read_the_run() -> None:
    """The poller's read began before the viewer's read of the run had returned, and ended
    after it began: which of the two is newer is unknown, so the viewer reads the run again
    rather than send the news's progress, which may be older."""
    job = running_run()
    news_read_started = time.monotonic()
    plan = following_at_progress_1_of_20(job)
    state = job_changed(job, progress_done=None, progress_total=None).state
    overlapping = JobChanged(job.id, state, news_read_started, time.monotonic())
    step = plan.send(([overlapping], False))
    assert isinstance(step, Read)  # not the news's progress
    assert isinstance(plan.send(step.call()), Wait)  # the run's progress is still 1 of 20: nothing to send


@pytest.mark.django_db
def test_a_viewer_reads_the_lines_the_poller_counted_but_did_not_bring() -> None:
    job = running_run()
    plan, _ = start_following(job)
    store_lines(job, 1, 4)
    step = plan.send(([job_changed(job, line_count=4)], False))
    assert isinstance(step, Read)
    lines = plan.send(step.call())
    assert isinstance(lines, Lines) and [row[0] for row in lines.rows] == [1, 2, 3, 4]


@pytest.mark.django_db
def test_a_viewer_reads_the_run_again_when_its_status_changes() -> None:
    job = running_run()
    plan, _ = start_following(job)
    Job.objects.filter(pk=job.pk).update(cancel_requested=True)
    step = plan.send(([job_changed(job, cancel_requested=True)], False))
    assert isinstance(step, Read)
    status = plan.send(step.call())
    assert isinstance(status, Status) and status.job.cancel_requested
