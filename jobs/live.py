"""In-process fan-out of freshly stored lines to the viewers in this process.

The flusher publishes each stored batch here. A subscriber (a live viewer, or `runjob`
echoing its own run) gets the batches of one job through a bounded buffer: a subscriber
that falls too far behind is marked as overflowed and must catch up from the database
instead, so a slow viewer never holds memory or slows the job down.
"""

from __future__ import annotations

import threading
import uuid
from collections import defaultdict, deque

from jobs.writer import Batch

#: Batches a subscriber may hold before it is cut off and told to read the database.
SUBSCRIBER_BUFFER = 1024


class Subscription:
    def __init__(self, job_id: uuid.UUID) -> None:
        self.job_id = job_id
        self.overflowed = False
        self._batches: deque[Batch] = deque()
        self._ready = threading.Condition()

    def put(self, batch: Batch) -> None:
        with self._ready:
            if len(self._batches) >= SUBSCRIBER_BUFFER:
                self.overflowed = True
                self._batches.clear()
            else:
                self._batches.append(batch)
            self._ready.notify_all()

    def get(self, timeout: float | None) -> list[Batch]:
        """The batches published since the last call; waits up to `timeout` for one."""
        with self._ready:
            if not self._batches and not self.overflowed:
                self._ready.wait(timeout)
            batches = list(self._batches)
            self._batches.clear()
            return batches


class LiveHub:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: defaultdict[uuid.UUID, set[Subscription]] = defaultdict(set)

    def subscribe(self, job_id: uuid.UUID) -> Subscription:
        subscription = Subscription(job_id)
        with self._lock:
            self._subscribers[job_id].add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            subscribers = self._subscribers.get(subscription.job_id)
            if subscribers is not None:
                subscribers.discard(subscription)
                if not subscribers:
                    del self._subscribers[subscription.job_id]

    def publish(self, batch: Batch) -> None:
        subscribers = self._subscribers.get(batch.job_id)
        if not subscribers:
            return
        with self._lock:
            subscribers = list(subscribers)
        for subscription in subscribers:
            subscription.put(batch)


hub = LiveHub()
