"""The embedded broker: one process, no Redis.

Same contract as the Redis broker (history, replay, ids ordered across
channels), so a single-worker deployment or a laptop behaves like production.
Everything happens in the publishing greenlet, without yielding, so a publish
and a replay never interleave.
"""

from __future__ import annotations

import logging
import time
from collections import deque

from ..channels import ChannelNames
from ..events import ZERO_ID, Delivery, EventId, Notification, delivery_from_payload, format_event_id, splice_id
from ..hub import Hub, Subscription
from . import Published, Replay, merge_by_id

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


class MemoryBroker:
    name = "memory"

    def __init__(self, hub: Hub, names: ChannelNames, history_max_events: int = 1000,
                 history_max_age_seconds: float = 86400, replay_max_events: int = 1000):
        self.hub = hub
        self.names = names
        self.history_max_events = history_max_events
        self.history_max_age_ms = int(history_max_age_seconds * 1000)
        self.replay_max_events = replay_max_events
        self._ids = IdGenerator()
        self._history: dict[str, deque[Delivery]] = {}
        # Highest id trimmed from each channel: a resume point below it has a gap.
        self._trimmed: dict[str, EventId] = {}
        self._stored = 0

    def start(self) -> None:
        log.info("using the embedded in-process broker: one process only, history is lost on restart")

    def stop(self) -> None:
        pass

    def publish(self, notifications: list[Notification]) -> list[Published]:
        published = []
        for notification in notifications:
            channel = self.names.for_target(notification.target)
            id_text = format_event_id(self._ids.next())
            delivery = delivery_from_payload(splice_id(id_text, notification.body_without_id()))
            self._store(channel, delivery)
            receivers = 1 if self.hub.has_channel(channel) else 0
            self.hub.dispatch(channel, delivery)
            published.append(Published(id_text, notification, receivers))
        return published

    PRUNE_EVERY = 1000  # publishes between sweeps for channels gone quiet

    def _prune(self, now_ms: int) -> None:
        """Forget channels whose newest event is past the age bound: without
        this, every user id ever published to would keep an entry forever."""
        cutoff = (now_ms - self.history_max_age_ms, 0)
        for channel in [c for c, history in self._history.items() if not history or history[-1].id < cutoff]:
            del self._history[channel]
            self._trimmed.pop(channel, None)

    def _store(self, channel: str, delivery: Delivery) -> None:
        self._stored += 1
        if self._stored % self.PRUNE_EVERY == 0:
            self._prune(delivery.id[0])
        history = self._history.setdefault(channel, deque())
        history.append(delivery)
        cutoff = (delivery.id[0] - self.history_max_age_ms, 0)
        while history and (len(history) > self.history_max_events or history[0].id < cutoff):
            dropped = history.popleft()
            self._trimmed[channel] = max(self._trimmed.get(channel, ZERO_ID), dropped.id)

    def attach(self, subscription: Subscription) -> None:
        self.hub.subscribe(subscription)

    def detach(self, subscription: Subscription) -> None:
        self.hub.unsubscribe(subscription)

    def replay(self, channels: list[str], after: EventId) -> Replay:
        if after > self._ids.last:
            return Replay(reset=True, reason="unknown_id")
        if after[0] < int(time.time() * 1000) - self.history_max_age_ms:
            return Replay(reset=True, reason="too_old")
        streams = []
        for channel in channels:
            history = self._history.get(channel)
            # Same rule as Redis: once a channel was trimmed, a resume point
            # below its oldest kept event may have lost something.
            if channel in self._trimmed and history and history[0].id > after:
                return Replay(reset=True, reason="too_old")
            streams.append([d for d in self._history.get(channel, ()) if d.id > after])
        events = merge_by_id(streams)
        if len(events) > self.replay_max_events:
            return Replay(reset=True, reason="too_many")
        return Replay(events)

    def recent(self, channels: list[str], before: EventId | None, limit: int) -> list[Delivery]:
        streams = []
        for channel in channels:
            streams.append([d for d in self._history.get(channel, ()) if before is None or d.id < before])
        return list(reversed(merge_by_id(streams)))[:limit]

    def last_id(self) -> EventId:
        return self._ids.last

    def ready(self) -> tuple[bool, str]:
        return True, "ok"
