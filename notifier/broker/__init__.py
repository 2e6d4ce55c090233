"""Brokers carry events between processes; the hub fans them out inside one.

Two implementations of one narrow interface, checked by one contract suite:

- ``MemoryBroker``: one process, no Redis. The embedded default.
- ``RedisBroker``: Redis pub/sub for live events (one connection per worker,
  owned by one greenlet) and one Redis Stream per channel for history.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from ..events import Delivery, EventId, Notification
from ..hub import Subscription


@dataclass(frozen=True)
class Published:
    """What the publish API reports for each stored event."""

    id: str
    notification: Notification
    receivers: int  # worker processes (Redis) or local streams (memory) that had a subscriber


@dataclass
class Replay:
    """Events after a client's Last-Event-ID, or ``reset`` when that id cannot
    be resumed from (unknown, or older than the history kept)."""

    events: list[Delivery] = field(default_factory=list)
    reset: bool = False
    reason: str = ""


class Broker(Protocol):
    name: str

    def start(self) -> None:
        """Begin delivering (spawns the subscriber greenlet for Redis)."""

    def stop(self) -> None:
        """Stop delivering and release connections."""

    def publish(self, notifications: list[Notification]) -> list[Published]:
        """Store every notification in its channel's history and publish it, all
        or nothing. Raises BrokerUnavailable when that cannot be guaranteed."""
        ...

    def attach(self, subscription: Subscription) -> None:
        """Add to the hub and return once live events on all of the
        subscription's channels will reach it. Raises BrokerUnavailable."""

    def detach(self, subscription: Subscription) -> None:
        """Remove from the hub; channels nobody listens to any more are released."""

    def replay(self, channels: list[str], after: EventId) -> Replay:
        """Events after ``after`` on these channels, oldest first, from one snapshot."""
        ...

    def recent(self, channels: list[str], before: EventId | None, limit: int) -> list[Delivery]:
        """Up to ``limit`` newest events before ``before`` (exclusive), newest first."""
        ...

    def last_id(self) -> EventId:
        """The newest id assigned so far (the position to resume from)."""
        ...

    def ready(self) -> tuple[bool, str]:
        """Whether this process can deliver live events right now, and why not."""
        ...


def merge_by_id(streams: list[list[Delivery]]) -> list[Delivery]:
    """Merge per-channel histories into one id-ordered list without duplicates
    (an event has one channel, but be safe)."""
    merged: dict[EventId, Delivery] = {}
    for stream in streams:
        for delivery in stream:
            merged[delivery.id] = delivery
    return [merged[key] for key in sorted(merged)]
