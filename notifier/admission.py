"""Who may open one more stream: the worker's own cap first (it costs no
round trip, and a full worker must answer at once), then the user's cap
across every pod (``StreamLeases``).

The worker's cap leaves part of gunicorn's connections
(``NOTIFIER_WORKER_CONNECTIONS``) to requests that are not streams, so
health probes, scrapes and publishes are served however many streams are
open, and a refusal is itself a quick answer rather than a wait.
"""

from __future__ import annotations

import itertools
import uuid

from .broker import StreamLeases
from .errors import TooManyStreams, WorkerFull


class StreamAdmission:
    def __init__(self, leases: StreamLeases, per_user: int, per_worker: int, retry_after_seconds: int):
        self.leases = leases
        self.per_user = per_user
        self.per_worker = per_worker
        self.retry_after = retry_after_seconds
        self.open = 0  # streams admitted and not yet released in this worker
        self._node = uuid.uuid4().hex[:12]
        self._ids = itertools.count(1)

    def admit(self, user_id: str | None) -> str:
        """A lease id for one more stream of ``user_id``; release it when the
        stream ends. Raises WorkerFull (503), TooManyStreams (429) or
        BrokerUnavailable (503), taking nothing. ``None``: an anonymous
        stream (``compat.flask_sse``), bounded by the worker's cap only:
        there is no user to count it against."""
        if self.open >= self.per_worker:
            raise WorkerFull(self.retry_after)
        # Counted before the round trip: streams admitted meanwhile see it.
        self.open += 1
        lease_id = f"{self._node}:{next(self._ids)}"
        if user_id is None:
            return lease_id
        try:
            taken = self.leases.acquire(user_id, lease_id, self.per_user)
        except BaseException:
            self.open -= 1
            raise
        if not taken:
            self.open -= 1
            raise TooManyStreams(self.per_user, self.retry_after)
        return lease_id

    def release(self, user_id: str | None, lease_id: str) -> None:
        self.open -= 1
        if user_id is not None:
            self.leases.release(user_id, lease_id)
