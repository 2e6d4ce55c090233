"""Brokers carry events between processes; the hub fans them out inside one.

Narrow protocols, each with a memory and a Redis implementation checked by
one contract suite (tests/contract/):

- ``Broker``: live events. Start and stop, subscribe and unsubscribe
  channels, publish (store in history and send live, all or nothing), health.
  Every message it receives goes to one ``BrokerListener`` (the core).
- ``History``: what was published, per channel: replay after an id, a page of
  recent events, the last id assigned.
- ``CatchUp``: an optional capability of a history, for a broker whose live
  connection can drop (Redis): what was published between two ids, and which
  channels were trimmed past a point.

Who subscribes what, and when, is the core's business (``core.py``): a
broker never sees the hub.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from ..events import Delivery, EventId, Notification, Published, ReadState


@dataclass(frozen=True)
class Health:
    """Whether this process can deliver live events now, and why not."""

    ok: bool
    reason: str = "ok"
    broker: str = ""
    reconnects: int = 0
    last_alive: float = 0.0  # time.time() the live connection last proved itself (0: never, or not applicable)


class BrokerListener(Protocol):
    """Where a broker hands what it receives. Called from the broker's own
    greenlet, one call at a time, in the order the messages arrived."""

    def deliver(self, channel: str, payload: str) -> None:
        """One live message (an envelope, ``envelope.py``)."""

    def resubscribed(self) -> None:
        """Every wanted channel is (again) confirmed on a new live connection:
        catch up from history on what an outage missed, before reading on."""


class Broker(Protocol):
    def start(self, listener: BrokerListener) -> None:
        """Begin delivering to ``listener`` (spawns the subscriber greenlet for Redis)."""

    def stop(self) -> None:
        """Stop delivering and release connections."""

    def subscribe(self, channels: list[str]) -> None:
        """Return once live messages on ``channels`` will reach the listener.
        Bounded: raises BrokerUnavailable when that is not confirmed in time
        (the channels are then unsubscribed again)."""

    def unsubscribe(self, channels: list[str]) -> None:
        """Stop receiving ``channels``. Never blocks."""

    def publish(self, notifications: list[Notification]) -> list[Published]:
        """Store every notification in its channel's history and publish it, all
        or nothing. Raises BrokerUnavailable when that cannot be guaranteed."""
        ...

    def health(self) -> Health:
        ...


@dataclass
class Replay:
    """Events after a client's Last-Event-ID, or ``reset`` when that id cannot
    be resumed from (unknown, or older than the history kept)."""

    events: list[Delivery] = field(default_factory=list)
    reset: bool = False
    reason: str = ""


class History(Protocol):
    def replay(self, channels: list[str], after: EventId) -> Replay:
        """Events after ``after`` on these channels, oldest first, from one snapshot."""
        ...

    def recent(self, channels: list[str], before: EventId | None, limit: int) -> list[Delivery]:
        """Up to ``limit`` newest events before ``before`` (exclusive), newest first."""
        ...

    def last_id(self) -> EventId:
        """The newest id assigned so far (the position to resume from)."""
        ...


@runtime_checkable
class CatchUp(Protocol):
    def between(self, channels: list[str], after: EventId, upto: EventId) -> list[tuple[str, Delivery]]:
        """Every event on ``channels`` with ``after < id <= upto``, as (channel, event), in id order."""
        ...

    def gaps(self, channels: list[str], after: EventId) -> list[str]:
        """The channels whose history no longer reaches back to ``after``."""
        ...


def merge_by_id(streams: list[list[Delivery]]) -> list[Delivery]:
    """Merge per-channel histories into one id-ordered list without duplicates
    (an event has one channel, but be safe)."""
    merged: dict[EventId, Delivery] = {}
    for stream in streams:
        for delivery in stream:
            merged[delivery.id] = delivery
    return [merged[key] for key in sorted(merged)]


class ReadMarkers(Protocol):
    """Per-user read state (the inbox), bounded like the history: a marker older
    than the history's age covers nothing still kept, so it may expire; at most
    ``max_ids`` single ids per user, the newest kept."""

    def mark_up_to(self, user_id: str, up_to: EventId) -> ReadState:
        """Everything up to ``up_to`` is read. Never moves back (two tabs
        marking at once keep the newer). Returns the state after."""
        ...

    def mark_ids(self, user_id: str, ids: list[EventId]) -> ReadState:
        ...

    def state(self, user_id: str) -> ReadState:
        ...
