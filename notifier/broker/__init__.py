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
- ``StreamLeases``: how many streams each user has open, counted across every
  process that shares the broker, so a per-user cap holds cluster-wide.

Two more small capabilities, each with a memory and a Redis implementation
and one contract suite, shared across pods through Redis:

- ``TicketStore``: single-use values that expire (stream tickets).
- ``RateLimiter``: a token bucket per key (publishers).

Who subscribes what, and when, is the core's business (``core.py``): a
broker never sees the hub.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from ..events import Delivery, EventId, Notification, Published, ReadState
from ..fewsets import FewSet, joined, without


@dataclass(frozen=True)
class ShardHealth:
    """One live connection's state (a Cluster shard; "primary" otherwise)."""

    name: str
    ok: bool
    last_alive: float = 0.0


@dataclass(frozen=True)
class Health:
    """Whether this process can deliver live events now, and why not."""

    ok: bool
    reason: str = "ok"
    broker: str = ""
    reconnects: int = 0
    last_alive: float = 0.0  # time.time() the live connection last proved itself (0: never, or not applicable)
    shards: tuple[ShardHealth, ...] = ()  # per live connection, where there are several (Cluster)


class BrokerListener(Protocol):
    """Where a broker hands what it receives. Called from the broker's own
    greenlet, one call at a time, in the order the messages arrived."""

    def deliver(self, channel: str, payload: str) -> None:
        """One live message (an envelope, ``envelope.py``)."""

    def resubscribed(self, channels: list[str] | None = None) -> None:
        """Every wanted channel (or, on a Cluster, ``channels``: those of one
        shard, or moved to it) is (again) confirmed on a new live connection:
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
    # Histories ordered per channel only (Cluster): for each channel, the id up
    # to which this replay covers it (on a reset, its newest id). Live copies
    # at or below it are duplicates.
    positions: dict[str, EventId] | None = None


class Page(list[Delivery]):
    """A page of recent events, newest first; ``more`` when the page was cut
    (by its count or its bytes) with older events left to fetch."""

    more: bool = False


def fill_page(newest_first: Iterable[Delivery], limit: int, max_bytes: int | None) -> Page:
    """Take events until ``limit`` of them, or until the next one would take
    the frames past ``max_bytes`` (a page always holds at least one event)."""
    page = Page()
    size = 0
    for delivery in newest_first:
        size += len(delivery.frame)
        if len(page) >= limit or (page and max_bytes is not None and size > max_bytes):
            page.more = True
            break
        page.append(delivery)
    return page


class History(Protocol):
    def replay(self, channels: list[str], after: EventId) -> Replay:
        """Events after ``after`` on these channels, oldest first, from one
        snapshot; ``reset`` (``too_many``) instead when they are more than the
        replay bounds allow (count or bytes), decided before their payloads
        are read."""
        ...

    def recent(self, channels: list[str], before: EventId | None, limit: int,
               max_bytes: int | None = None) -> Page:
        """Up to ``limit`` newest events before ``before`` (exclusive), newest
        first, their frames within ``max_bytes`` (see ``fill_page``); read
        a few at a time, never the whole history."""
        ...

    def last_id(self, channels: Sequence[str] = ()) -> EventId:
        """The newest id assigned so far on ``channels`` (the position to
        resume from); one sequence serves every channel except on a Cluster."""
        ...


@runtime_checkable
class CatchUp(Protocol):
    def between(self, channels: list[str], after: EventId, upto: EventId) -> list[tuple[str, Delivery]]:
        """Every event on ``channels`` with ``after < id <= upto``, as (channel, event), in id order."""
        ...

    def gaps(self, channels: list[str], after: EventId) -> list[str]:
        """The channels whose history no longer reaches back to ``after``."""
        ...


class StreamLeases(Protocol):
    """Open streams per user, across every process. A lease of a process
    that dies is not released: it expires unless its holder keeps renewing
    it, so a count cannot leak."""

    def acquire(self, user_id: str, lease_id: str, limit: int) -> bool:
        """Take a lease for one stream of ``user_id``; False (and nothing
        taken) when the user already holds ``limit`` live leases. Raises
        BrokerUnavailable when the count cannot be read."""
        ...

    def release(self, user_id: str, lease_id: str) -> None:
        """Give a lease back. Never raises: a lease not released expires."""

    def start(self) -> None:
        """Begin renewing this process's leases."""

    def stop(self) -> None:
        """Stop renewing (the leases still held expire)."""


class HeldLeases(dict[str, FewSet[str]]):
    """The leases this process holds, by user: the whole count for the
    embedded broker, what to renew for Redis. A user's are a tuple while
    they are few (fewsets)."""

    def add(self, user_id: str, lease_id: str) -> None:
        self[user_id] = joined(self.get(user_id), lease_id)

    def discard(self, user_id: str, lease_id: str) -> None:
        leases = self.get(user_id)
        if leases is not None:
            rest = without(leases, lease_id)
            if rest is None:
                del self[user_id]
            else:
                self[user_id] = rest


class TicketStore(Protocol):
    def put(self, key: str, value: str, ttl_seconds: float) -> None:
        """Keep ``value`` under ``key`` for ``ttl_seconds``. Raises BrokerUnavailable."""

    def take(self, key: str) -> str | None:
        """The value, at most once, and only before it expired: taking it
        removes it, atomically (two pods redeeming at once: one gets it).
        Raises BrokerUnavailable."""


class RateLimiter(Protocol):
    def acquire(self, key: str) -> float:
        """0.0 when one more request by ``key`` may go now (it is counted);
        otherwise the seconds until one may (nothing is counted). Raises
        BrokerUnavailable."""
        ...


@runtime_checkable
class ChannelCatchUp(Protocol):
    """The catch-up of a history whose ids are ordered per channel only
    (Cluster): each channel from its own point."""

    def since(self, afters: dict[str, EventId]) -> tuple[list[tuple[str, Delivery]], list[str]]:
        """Events after each channel's point (in order per channel), and the
        channels trimmed past their point."""
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
