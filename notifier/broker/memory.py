"""The embedded broker and history: one process, no Redis.

Same contracts as Redis (history, replay, ids ordered across channels), so a
single-worker deployment or a laptop behaves like production. Everything
happens in the publishing greenlet, without yielding, so a publish and a
replay never interleave.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Sequence

from ..channels import ChannelNames
from ..envelope import body_without_id, decode, splice_id
from ..events import ZERO_ID, Delivery, EventId, Notification, Published, format_event_id
from . import BrokerListener, Health, HeldLeases, Page, Replay, fill_page, merge_by_id

log = logging.getLogger("notifier.broker.memory")


class IdGenerator:
    """``(ms, seq)`` ids, strictly increasing even if the clock steps back."""

    def __init__(self) -> None:
        self.last: EventId = ZERO_ID

    def next(self, now_ms: int | None = None) -> EventId:
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        ms, seq = self.last
        self.last = (now_ms, 0) if now_ms > ms else (ms, seq + 1)
        return self.last


class MemoryHistory:
    """Per-channel history bounded by count and age, and the id sequence."""

    PRUNE_EVERY = 1000  # appends between sweeps for channels gone quiet

    def __init__(self, history_max_events: int = 1000, history_max_age_seconds: float = 86400,
                 replay_max_events: int = 1000, replay_max_bytes: int | None = None):
        self.history_max_events = history_max_events
        self.history_max_age_ms = int(history_max_age_seconds * 1000)
        self.replay_max_events = replay_max_events
        self.replay_max_bytes = replay_max_bytes
        self.ids = IdGenerator()
        self.channels: dict[str, deque[Delivery]] = {}
        # Highest id trimmed from each channel: a resume point below it has a gap.
        self._trimmed: dict[str, EventId] = {}
        self._stored = 0

    def append(self, channel: str, notification: Notification) -> Delivery:
        """Assign the next id and keep the event; returns it."""
        delivery = decode(splice_id(format_event_id(self.ids.next()), body_without_id(notification)))
        self._stored += 1
        if self._stored % self.PRUNE_EVERY == 0:
            self._prune(delivery.id[0])
        history = self.channels.setdefault(channel, deque())
        history.append(delivery)
        cutoff = (delivery.id[0] - self.history_max_age_ms, 0)
        while history and (len(history) > self.history_max_events or history[0].id < cutoff):
            dropped = history.popleft()
            self._trimmed[channel] = max(self._trimmed.get(channel, ZERO_ID), dropped.id)
        return delivery

    def _prune(self, now_ms: int) -> None:
        """Forget channels whose newest event is past the age bound: without
        this, every user id ever published to would keep an entry forever."""
        cutoff = (now_ms - self.history_max_age_ms, 0)
        for channel in [c for c, history in self.channels.items() if not history or history[-1].id < cutoff]:
            del self.channels[channel]
            self._trimmed.pop(channel, None)

    # -- History --------------------------------------------------------------

    def replay(self, channels: list[str], after: EventId) -> Replay:
        if after > self.ids.last:
            return Replay(reset=True, reason="unknown_id")
        if after[0] < int(time.time() * 1000) - self.history_max_age_ms:
            return Replay(reset=True, reason="too_old")
        if self.gaps(channels, after):
            return Replay(reset=True, reason="too_old")
        events = merge_by_id([[d for d in self.channels.get(channel, ()) if d.id > after] for channel in channels])
        if len(events) > self.replay_max_events or self._too_large(events):
            return Replay(reset=True, reason="too_many")
        return Replay(events)

    def _too_large(self, events: list[Delivery]) -> bool:
        # Counted as the Redis history counts: the stored envelope's UTF-8 bytes.
        if self.replay_max_bytes is None:
            return False
        return sum(len(d.payload.encode("utf-8")) for d in events) > self.replay_max_bytes

    def recent(self, channels: list[str], before: EventId | None, limit: int,
               max_bytes: int | None = None) -> Page:
        streams = [[d for d in self.channels.get(channel, ()) if before is None or d.id < before] for channel in channels]
        return fill_page(reversed(merge_by_id(streams)), limit, max_bytes)

    def last_id(self, channels: Sequence[str] = ()) -> EventId:  # one sequence for all channels
        return self.ids.last

    # -- CatchUp --------------------------------------------------------------

    def between(self, channels: list[str], after: EventId, upto: EventId) -> list[tuple[str, Delivery]]:
        found = [(channel, d) for channel in channels for d in self.channels.get(channel, ()) if after < d.id <= upto]
        return sorted(found, key=lambda pair: pair[1].id)

    def gaps(self, channels: list[str], after: EventId) -> list[str]:
        # Same rule as Redis: once a channel was trimmed, a resume point below
        # its oldest kept event may have lost something.
        return [channel for channel in channels
                if channel in self._trimmed and self.channels.get(channel) and self.channels[channel][0].id > after]


class MemoryStreamLeases:
    """``StreamLeases`` for one process (the embedded broker): nothing to
    renew, since a lease dies with the process that holds it."""

    def __init__(self) -> None:
        self.held = HeldLeases()

    def acquire(self, user_id: str, lease_id: str, limit: int) -> bool:
        if len(self.held.get(user_id, ())) >= limit:
            return False
        self.held.add(user_id, lease_id)
        return True

    def release(self, user_id: str, lease_id: str) -> None:
        self.held.discard(user_id, lease_id)

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


class MemoryBroker:
    """Publishing stores in a ``MemoryHistory`` and hands the event straight to
    the listener when a local stream listens on its channel."""

    def __init__(self, names: ChannelNames, history: MemoryHistory):
        self.names = names
        self.history = history
        self._listener: BrokerListener | None = None
        self._channels: set[str] = set()

    def start(self, listener: BrokerListener) -> None:
        self._listener = listener
        log.info("using the embedded in-process broker: one process only, history is lost on restart")

    def stop(self) -> None:
        self._listener = None

    def subscribe(self, channels: list[str]) -> None:
        self._channels.update(channels)

    def unsubscribe(self, channels: list[str]) -> None:
        self._channels.difference_update(channels)

    def publish(self, notifications: list[Notification]) -> list[Published]:
        published = []
        for notification in notifications:
            channel = self.names.for_target(notification.target)
            delivery = self.history.append(channel, notification)
            listening = channel in self._channels and self._listener is not None
            if listening:
                self._listener.deliver(channel, delivery.payload)  # type: ignore[union-attr]
            published.append(Published(format_event_id(delivery.id), notification, 1 if listening else 0))
        return published

    def health(self) -> Health:
        return Health(True, "ok", "memory")
