"""In-process fan-out: which local subscription listens to which channel.

Knows nothing of Redis or HTTP. The core (``core.py``) adds and removes
subscriptions and calls ``dispatch`` with an event that was decoded and
framed once; each subscription gets a reference to the same bytes through
its own bounded queue. ``offer`` never blocks: a
subscription whose queue is full is evicted (its stream ends, the client
reconnects and replays), so one slow client can never slow the others.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Callable, Iterable

import gevent
from gevent.event import Event

from .events import ZERO_ID, Delivery, EventId
from .fewsets import FewSet, joined, snapshot, without

log = logging.getLogger("notifier.hub")

_ids = itertools.count(1)


class CloseReason:
    CLIENT_GONE = "client_gone"
    TOKEN_EXPIRED = "token_expired"
    DEADLINE = "deadline"
    EVICTED = "evicted"
    SHUTDOWN = "shutdown"
    WRITE_TIMEOUT = "write_timeout"
    ERROR = "error"


class Subscription:
    """One stream's mailbox. Written by the broker greenlet, read by the stream greenlet."""

    __slots__ = (
        "channel_marks",
        "channels",
        "closed",
        "deadline",
        "deadline_reason",
        "farewell",
        "id",
        "last_queued_id",
        "max_bytes",
        "maxsize",
        "on_alarm_clock",
        "on_evict",
        "queue",
        "queued_bytes",
        "user_id",
        "wake_at",
        "wakeup",
        "writing_since",
    )

    def __init__(self, user_id: str, channels: Iterable[str], maxsize: int, max_bytes: int | None = None):
        self.id = next(_ids)
        self.user_id = user_id
        self.channels = tuple(dict.fromkeys(channels))
        self.maxsize = maxsize
        # Bytes as well as events: 512 large events would be tens of MB per
        # stream. One event is always taken into an empty queue, whatever its size.
        self.max_bytes = max_bytes
        self.queued_bytes = 0
        # A list, not a deque: an empty deque allocates a whole block per idle
        # stream, and take() swaps the list out instead of copying it.
        self.queue: list[Delivery] = []
        self.wakeup = Event()
        self.closed: str | None = None
        # Highest id queued so far: events arrive in id order (one pub/sub
        # connection per worker), so anything at or below it is a duplicate
        # (replay overlap, or a catch-up after a broker reconnect).
        self.last_queued_id: EventId = ZERO_ID
        # On a Redis Cluster ids are ordered per channel only, and events of
        # different channels arrive over different connections: the highest id
        # queued per channel instead (the core sets a dict; None: one order).
        self.channel_marks: dict[str, EventId] | None = None
        # Cuts the stream's connection (shuts its socket down): the one way
        # to end a stream whose greenlet is blocked writing to its client.
        self.on_evict: Callable[[], None] | None = None
        # When the stream must end (a time.monotonic() value) and why, and
        # since when its greenlet has been writing (inf: not writing). The
        # hub's alarm clock cuts a stream blocked in a write past either
        # bound: a client that stops reading holds nothing past its token.
        self.deadline = math.inf
        self.deadline_reason = CloseReason.DEADLINE
        self.writing_since = math.inf
        # Bytes to send before the stream ends on shutdown (a jittered retry:).
        self.farewell = b""
        # When the stream wants to wake with nothing queued (its next heartbeat
        # or its deadline), and whether a hub's alarm clock will wake it then.
        self.wake_at = math.inf
        self.on_alarm_clock = False

    def offer(self, delivery: Delivery, channel: str = "") -> bool:
        """Queue without blocking. Returns False when this call evicted the subscription."""
        marks = self.channel_marks
        if marks is None:
            if self.closed is not None or delivery.id <= self.last_queued_id:
                return True
        elif self.closed is not None or delivery.id <= marks.get(channel, ZERO_ID):
            return True
        size = len(delivery.frame)
        if len(self.queue) >= self.maxsize or (
                self.queue and self.max_bytes is not None and self.queued_bytes + size > self.max_bytes):
            self.cut(CloseReason.EVICTED)
            return False
        self.queue.append(delivery)
        self.queued_bytes += size
        if marks is None:
            self.last_queued_id = delivery.id
        else:
            marks[channel] = delivery.id
        self.wakeup.set()
        return True

    def cut(self, reason: str) -> None:
        """Close, and cut the connection under a greenlet that may be blocked writing."""
        self.close(reason)
        self.writing_since = math.inf  # cut once: that write fails now
        if self.on_evict is not None:
            try:
                self.on_evict()
            except Exception:  # pragma: no cover - best effort
                log.debug("on_evict failed", exc_info=True)

    def skip_through(self, event_id: EventId) -> None:
        """Everything up to ``event_id`` is already taken care of (sent from
        history, or covered by a reset): drop it from the queue and refuse it
        later. This is the no-gap, no-duplicate hand-over from replay to live."""
        if event_id <= self.last_queued_id and not self.queue:
            return
        self.queue = [d for d in self.queue if d.id > event_id]
        self.queued_bytes = sum(len(d.frame) for d in self.queue)
        self.last_queued_id = max(self.last_queued_id, event_id)

    def skip_channels(self, positions: dict[str, EventId], sent: list[Delivery]) -> None:
        """The per-channel hand-over (Cluster): ``sent`` went out from history,
        and each channel is covered up to its position. Drops the queued live
        copies of ``sent`` and refuses anything at or below a position later."""
        if sent and self.queue:
            already = {(d.id, d.payload) for d in sent}
            self.queue = [d for d in self.queue if (d.id, d.payload) not in already]
            self.queued_bytes = sum(len(d.frame) for d in self.queue)
        marks = self.channel_marks
        if marks is not None:
            for channel, position in positions.items():
                if position > marks.get(channel, ZERO_ID):
                    marks[channel] = position

    def take(self) -> list[Delivery]:
        """Everything queued, oldest first (empties the queue)."""
        items = self.queue
        self.queue = []
        self.queued_bytes = 0
        if self.closed is None:
            self.wakeup.clear()
        return items

    def wait(self, timeout: float | None) -> bool:
        """Block this greenlet until something is queued, the subscription closes, or timeout."""
        if self.queue or self.closed is not None:
            return True
        return self.wakeup.wait(timeout)

    def sleep_until(self, when: float) -> None:
        """Block this greenlet until something is queued, the subscription
        closes, or ``when`` (a ``time.monotonic()`` value) has come.

        On a hub's alarm clock no timer is armed per wait: the hub's one
        greenlet wakes whoever is due, so an idle stream costs no timer object
        and a delivery re-arms nothing (bench/README.md has the figures)."""
        if self.queue or self.closed is not None:
            return
        self.wake_at = when
        if self.on_alarm_clock:
            self.wakeup.wait()
        else:
            self.wakeup.wait(max(0.0, when - time.monotonic()))

    def close(self, reason: str) -> None:
        if self.closed is None:
            self.closed = reason
            self.queue.clear()
            self.queued_bytes = 0
            self.wakeup.set()

    def __repr__(self) -> str:
        return f"<Subscription {self.id} user={self.user_id!r} channels={len(self.channels)} closed={self.closed}>"


class Hub:
    def __init__(self, on_evict: Callable[[Subscription], None] | None = None, alarm_interval: float = 1.0,
                 write_timeout: float = math.inf):
        # A tuple for a channel of a few streams, a set past that (fewsets).
        self._channels: dict[str, FewSet[Subscription]] = {}
        self._subscriptions: set[Subscription] = set()
        self._on_evict = on_evict
        # One greenlet per hub (per worker) wakes streams whose heartbeat or
        # deadline is due, checking every alarm_interval seconds; it runs
        # only while there are subscriptions.
        self.alarm_interval = alarm_interval
        self.write_timeout = write_timeout
        self._alarm_clock: gevent.Greenlet | None = None

    def add(self, subscription: Subscription) -> list[str]:
        """Register; returns the channels that had no local subscriber before."""
        self._subscriptions.add(subscription)
        subscription.on_alarm_clock = True
        if self._alarm_clock is None:
            self._alarm_clock = gevent.spawn(self._ring_alarms)
        first = []
        for channel in subscription.channels:
            members = self._channels.get(channel)
            if members is None:
                first.append(channel)
            self._channels[channel] = joined(members, subscription)
        return first

    def remove(self, subscription: Subscription) -> list[str]:
        """Forget; returns the channels that now have no local subscriber."""
        self._subscriptions.discard(subscription)
        if subscription.on_alarm_clock:
            subscription.on_alarm_clock = False
            subscription.wakeup.set()  # a wait without a timer must not outlive the clock: re-arm with one
        emptied = []
        for channel in subscription.channels:
            members = self._channels.get(channel)
            if members is None:
                continue
            rest = without(members, subscription)
            if rest is None:
                del self._channels[channel]
                emptied.append(channel)
            else:
                self._channels[channel] = rest
        return emptied

    def dispatch(self, channel: str, delivery: Delivery) -> int:
        """Hand one event to every local subscriber of ``channel``; returns how many took it."""
        members = self._channels.get(channel)
        if not members:
            return 0
        delivered = 0
        # A snapshot: an eviction callback may unsubscribe while we iterate.
        for subscription in snapshot(members):
            if subscription.offer(delivery, channel):
                delivered += 1
            elif self._on_evict is not None:
                self._on_evict(subscription)
        return delivered

    def has_channel(self, channel: str) -> bool:
        return channel in self._channels

    def channels(self) -> list[str]:
        return list(self._channels)

    def __len__(self) -> int:
        return len(self._subscriptions)

    def _ring_alarms(self) -> None:
        try:
            while self._subscriptions:
                gevent.sleep(self.alarm_interval)
                now = time.monotonic()
                # Neither Event.set() nor a socket shutdown switches greenlets:
                # the set cannot change under this loop.
                stuck_since = now - self.write_timeout
                for subscription in self._subscriptions:
                    if subscription.wake_at <= now:
                        subscription.wakeup.set()
                    if subscription.writing_since <= stuck_since:
                        subscription.cut(CloseReason.WRITE_TIMEOUT)
                    elif subscription.writing_since < now and subscription.deadline <= now:
                        subscription.cut(subscription.deadline_reason)
        finally:
            # No switch between the emptiness check and this line, so a
            # subscribe() either saw this greenlet alive or starts a new one.
            self._alarm_clock = None

    def subscriptions(self) -> list[Subscription]:
        return list(self._subscriptions)

    def close_all(self, reason: str = CloseReason.SHUTDOWN) -> int:
        count = 0
        for subscription in list(self._subscriptions):
            subscription.close(reason)
            count += 1
        return count
