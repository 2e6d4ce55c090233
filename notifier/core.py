"""The one owner of a worker's subscriptions: the hub, the broker and the
history, and the rules that tie them together.

    subscribe(sub): hub.add(sub) --first local subscriber of a channel?--> broker.subscribe(ch), awaited, bounded
                    error --> hub.remove(sub) (roll back) --> the client gets the error
    leave(sub):     hub.remove(sub) --last one?--> broker.unsubscribe(ch)
    broker --deliver(channel, payload)--> decode once --> hub.dispatch

After the broker lost and regained its live connection, ``resubscribed``
catches up from history what the outage missed, before anything newer.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from gevent.event import AsyncResult
from gevent.timeout import Timeout

from .broker import Broker, CatchUp, ChannelCatchUp, Health, History, ReadMarkers, Replay
from .envelope import decode
from .errors import BrokerUnavailable
from .events import ZERO_ID, Delivery, EventId, Notification, Published, parse_event_id
from .hub import CloseReason, Hub, Subscription

log = logging.getLogger("notifier.core")


@dataclass
class Opening:
    """Where a new stream starts: the events it missed (replay), or a reset
    (``reset_reason``) telling the client to refetch, resuming at ``resume_from``."""

    events: list[Delivery] = field(default_factory=list)
    resumed: bool = False  # a Last-Event-ID was given and replayed from
    reset_reason: str = ""
    resume_from: EventId = ZERO_ID


class Core:
    def __init__(self, hub: Hub, broker: Broker, history: History, *, subscribe_timeout: float = 5.0,
                 read_markers: ReadMarkers | None = None):
        self.hub = hub
        self.broker = broker
        self.history = history
        # The inbox's read state (optional: a core built without one has no inbox).
        self.read_markers = read_markers
        self.catch_up: CatchUp | None = history if isinstance(history, CatchUp) else None
        self.subscribe_timeout = subscribe_timeout
        # Channels whose first subscriber is waiting for the broker: later
        # arrivals wait for the same confirmation instead of going live early.
        self._confirming: dict[str, AsyncResult] = {}
        self._last_seen: EventId = ZERO_ID  # the newest id this worker has had live
        self._has_baseline = False
        # A history ordered per channel only (Cluster): subscriptions dedupe
        # per channel, and the catch-up starts each channel from the newest id
        # this worker had on it.
        self.per_channel = bool(getattr(history, "per_channel", False))
        self.channel_catch_up: ChannelCatchUp | None = history if isinstance(history, ChannelCatchUp) else None
        self._reorder_ms = int(getattr(history, "reorder_ms", 0))
        self._seen: dict[str, EventId] = {}

    def start(self) -> None:
        self.broker.start(self)

    def stop(self) -> None:
        self.broker.stop()

    def health(self) -> Health:
        return self.broker.health()

    def publish(self, notifications: list[Notification]) -> list[Published]:
        return self.broker.publish(notifications)

    # -- subscriptions -----------------------------------------------------------

    def subscribe(self, subscription: Subscription) -> None:
        """Return once live events on all of the subscription's channels reach
        it. Raises BrokerUnavailable (and leaves nothing behind) when not."""
        if self.per_channel and subscription.channel_marks is None:
            subscription.channel_marks = {}
        first = self.hub.add(subscription)
        try:
            if first:
                self._confirm(first)
            waiting = {self._confirming[c] for c in subscription.channels if c in self._confirming and c not in first}
            for confirmation in waiting:
                confirmation.get(timeout=self.subscribe_timeout)
        except Timeout:
            self.leave(subscription)
            raise BrokerUnavailable("could not subscribe in time; retry later") from None
        except BaseException:
            self.leave(subscription)
            raise

    def _confirm(self, channels: list[str]) -> None:
        confirmation = AsyncResult()
        for channel in channels:
            self._confirming[channel] = confirmation
        try:
            self.broker.subscribe(channels)
            if self.per_channel:
                # Where a catch-up of these channels would start if the broker
                # lost them before anything arrived (wall clock, less the
                # reorder window: the shards' clocks may differ a little).
                floor = (int(time.time() * 1000) - self._reorder_ms, 0)
                for channel in channels:
                    self._seen.setdefault(channel, floor)
            confirmation.set(True)
        except BaseException as exc:
            confirmation.set_exception(exc)
            raise
        finally:
            for channel in channels:
                if self._confirming.get(channel) is confirmation:
                    del self._confirming[channel]

    def leave(self, subscription: Subscription) -> None:
        emptied = self.hub.remove(subscription)
        if emptied:
            for channel in emptied:
                self._seen.pop(channel, None)
            self.broker.unsubscribe(emptied)

    def open(self, subscription: Subscription, resume_text: str | None) -> Opening:
        """Subscribe, then read history: whatever is published in between is
        in both, and ``skip_through`` drops the live copy. Any failure leaves
        nothing behind."""
        self.subscribe(subscription)
        try:
            return self._resume(subscription, resume_text)
        except BaseException:
            self.leave(subscription)
            raise

    def _resume(self, subscription: Subscription, resume_text: str | None) -> Opening:
        if not resume_text:
            return Opening()
        after = parse_event_id(resume_text)
        replay = self.history.replay(list(subscription.channels), after) if after is not None else None
        if replay is not None and replay.positions is not None:
            return self._resume_per_channel(subscription, replay)
        if replay is None or replay.reset:
            last = self.history.last_id(subscription.channels)
            subscription.skip_through(last)
            return Opening(reset_reason=replay.reason if replay else "unknown_id", resume_from=last)
        assert after is not None
        # The client has everything up to ``after``: a late copy of an older event
        # (a catch-up after a pub/sub reconnect) must not reach it again.
        subscription.skip_through(after)
        if replay.events:
            subscription.skip_through(replay.events[-1].id)
        return Opening(events=replay.events, resumed=True)

    def _resume_per_channel(self, subscription: Subscription, replay: Replay) -> Opening:
        """The hand-over where ids are ordered per channel only (Cluster)."""
        assert replay.positions is not None
        if replay.reset:
            subscription.skip_channels(replay.positions, [])
            return Opening(reset_reason=replay.reason, resume_from=max(replay.positions.values(), default=ZERO_ID))
        subscription.skip_channels(replay.positions, replay.events)
        return Opening(events=replay.events, resumed=True)

    # -- the broker's listener ---------------------------------------------------

    def deliver(self, channel: str, payload: str) -> None:
        try:
            delivery = decode(payload)
        except (ValueError, KeyError, TypeError):
            log.warning("dropping malformed message on %s", channel)
            return
        if delivery.id > self._last_seen:
            self._last_seen = delivery.id
        if self.per_channel and delivery.id > self._seen.get(channel, ZERO_ID):
            self._seen[channel] = delivery.id
        self.hub.dispatch(channel, delivery)

    def resubscribed(self, channels: list[str] | None = None) -> None:
        if self.per_channel:
            self._catch_up_per_channel(self.hub.channels() if channels is None else channels)
            return
        if not self._has_baseline:
            # The first session: live delivery starts here (no stream has
            # started yet, so there is nothing to catch up).
            self._last_seen = max(self._last_seen, self.history.last_id())
            self._has_baseline = True
            return
        if self.catch_up is None:
            return
        cutoff = self.history.last_id()
        if cutoff <= self._last_seen:
            return
        missed = self.catch_up.between(self.hub.channels(), self._last_seen, cutoff)
        self._end_streams_with_gaps(sorted({channel for channel, _delivery in missed}))
        for channel, delivery in missed:
            self.hub.dispatch(channel, delivery)
        self._last_seen = cutoff
        if missed:
            log.info("caught up %d events after reconnect", len(missed))

    def _catch_up_per_channel(self, channels: list[str]) -> None:
        """Each channel from the newest id this worker had on it (Cluster)."""
        if self.channel_catch_up is None:
            return
        floor = (int(time.time() * 1000) - self._reorder_ms, 0)
        afters = {c: self._seen.get(c, floor) for c in channels if self.hub.has_channel(c)}
        if not afters:
            return
        missed, gaps = self.channel_catch_up.since(afters)
        if gaps:
            self._end_streams(set(gaps))
        for channel, delivery in missed:
            self.deliver_event(channel, delivery)
        if missed:
            log.info("caught up %d events on %d channels after a resubscribe", len(missed), len(afters))

    def deliver_event(self, channel: str, delivery: Delivery) -> None:
        if self.per_channel and delivery.id > self._seen.get(channel, ZERO_ID):
            self._seen[channel] = delivery.id
        self.hub.dispatch(channel, delivery)

    def _end_streams(self, lagged: set[str]) -> None:
        ended = 0
        for subscription in self.hub.subscriptions():
            if not lagged.isdisjoint(subscription.channels):
                subscription.close(CloseReason.EVICTED)
                ended += 1
        log.warning("history trimmed during the outage on %d channels: ended %d streams to reset them",
                    len(lagged), ended)

    def _end_streams_with_gaps(self, channels: list[str]) -> None:
        """Channels trimmed past ``_last_seen`` while the broker was away lost
        events the catch-up cannot deliver: their streams would go on with a
        silent gap. End them first (before anything newer is queued), so they
        resume with their Last-Event-ID and the replay answers ``event: reset``."""
        assert self.catch_up is not None
        lagged = set(self.catch_up.gaps(channels, self._last_seen))
        if lagged:
            self._end_streams(lagged)
