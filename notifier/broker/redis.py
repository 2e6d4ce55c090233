"""The Redis broker: one pub/sub connection per worker process, owned by one
greenlet (``_run``), whatever the number of local clients.

- SUBSCRIBE a channel when its first local client arrives, UNSUBSCRIBE when the
  last one leaves; the broadcast channel and this worker's probe channel always.
- Each message is decoded and framed once, then ``hub.dispatch`` hands the
  same bytes to every local subscription.
- Liveness is checked by a round trip, not assumed: when the connection has
  been idle for ``probe_interval`` the greenlet PUBLISHes to its own probe
  channel and expects the message back within ``probe_timeout``. redis-py's
  ``health_check_interval`` only *sends* a PING and a half-open socket looks
  healthy, which is how subscribers elsewhere died silently.
- The retry loop sits outside the session; a session that fails for any
  reason is torn down whole, and the next one resubscribes everything and
  catches up from history what was published while it was away.
- Only the owner greenlet touches the PubSub object. Request greenlets ask for
  channels through ``_wanted`` and wait for the confirmation.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Callable
from typing import Any

import gevent
import redis
from gevent.event import Event

from ..channels import ChannelNames
from ..errors import BrokerUnavailable
from ..events import ZERO_ID, Delivery, EventId, Notification, delivery_from_payload
from ..hub import CloseReason, Hub, Subscription
from . import Published, Replay
from .redis_store import RedisStore, make_client
from .redis_store import text as _text

log = logging.getLogger("notifier.broker.redis")

POLL_SECONDS = 0.02  # how often the owner greenlet looks for channel changes
# The messages already read from the socket are handed to the hub back to back
# (at most DRAIN_MAX_MESSAGES, for at most DRAIN_BUDGET_SECONDS) before the
# streams run: each stream then wakes once and writes what it got in one
# chunk, one greenlet switch and one send() per round instead of per event
# (5x less CPU per broadcast delivery, 20% less per unicast one; bench/README.md).
# A narrow message (fewer than DRAIN_MIN_FANOUT local streams: a user's own, a
# small topic) for a stream that has not written its last event yet waits for
# the next round, so narrow traffic still reaches each stream one event per
# write and a reader never sees bursts it did not see before; wide broadcasts
# batch.
DRAIN_MIN_FANOUT = 64
DRAIN_MAX_MESSAGES = 128
DRAIN_BUDGET_SECONDS = 0.005
SUBSCRIBE_TIMEOUT = 5.0
BACKOFF_BASE = 0.05
BACKOFF_MAX = 2.0
CATCH_UP_CHUNK = 500


class ProbeFailed(Exception):
    """The pub/sub connection did not deliver our own probe back in time."""


class _Waiter:
    __slots__ = ("done", "missing")

    def __init__(self, missing: set[str]):
        self.missing = missing
        self.done = Event()


class RedisBroker:
    name = "redis"

    def __init__(self, hub: Hub, names: ChannelNames, url: str, *, socket_timeout: float = 5.0,
                 history_max_events: int = 1000, history_max_age_seconds: float = 86400,
                 replay_max_events: int = 1000, probe_interval: float = 5.0, probe_timeout: float = 3.0,
                 on_event: Callable[[str, str], None] | None = None):
        self.hub = hub
        self.names = names
        self.url = url
        self.socket_timeout = socket_timeout
        self.client = make_client(url, socket_timeout)
        self.store = RedisStore(self.client, names, history_max_events, history_max_age_seconds, replay_max_events)
        self.probe_interval = probe_interval
        self.probe_timeout = probe_timeout
        self.node_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.probe_channel = names.probe(self.node_id)
        self._always = {names.broadcast, self.probe_channel}
        # Channels the hub needs, channels we sent SUBSCRIBE for, channels Redis confirmed.
        self._requested: set[str] = set()
        self._confirmed: set[str] = set()
        # SUBSCRIBE replies still to come per channel: after SUBSCRIBE,
        # UNSUBSCRIBE, SUBSCRIBE of one channel, the first reply must not
        # confirm the second request (Redis has not processed it yet).
        self._outstanding: dict[str, int] = {}
        self._waiters: list[_Waiter] = []
        self._greenlet: gevent.Greenlet | None = None
        self._stopping = False
        self._ready = False
        self._why_not_ready = "starting"
        self._last_seen: EventId = ZERO_ID
        # Whether _last_seen holds a baseline yet. (Not "_last_seen is zero": on
        # an empty history it stays zero, and a reconnect before this worker
        # received anything would skip its catch-up.)
        self._had_session = False
        self._on_event = on_event or (lambda kind, detail: None)
        self.reconnects = 0
        self.last_probe_ok = 0.0

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> None:
        if self._greenlet is None:
            self._greenlet = gevent.spawn(self._run)
            log.info("redis broker started (node %s)", self.node_id)

    def stop(self) -> None:
        self._stopping = True
        if self._greenlet is not None:
            self._greenlet.kill(block=True, timeout=2)
            self._greenlet = None
        self._ready = False
        self.store.close()

    def ready(self) -> tuple[bool, str]:
        if self._stopping:
            return False, "stopping"
        return self._ready, ("ok" if self._ready else self._why_not_ready)

    # -- publishing and history (any greenlet; the pool serialises) ----------

    def publish(self, notifications: list[Notification]) -> list[Published]:
        try:
            return self.store.publish(notifications)
        except redis.RedisError as exc:
            log.warning("publish failed: %s", exc.__class__.__name__)
            raise BrokerUnavailable() from None

    def replay(self, channels: list[str], after: EventId) -> Replay:
        try:
            return self.store.replay(channels, after)
        except redis.RedisError:
            raise BrokerUnavailable() from None

    def recent(self, channels: list[str], before: EventId | None, limit: int) -> list[Delivery]:
        try:
            return self.store.recent(channels, before, limit)
        except redis.RedisError:
            raise BrokerUnavailable() from None

    def last_id(self) -> EventId:
        try:
            return self.store.last_id()
        except redis.RedisError:
            raise BrokerUnavailable() from None

    # -- subscriptions (request greenlets) ----------------------------------

    def attach(self, subscription: Subscription) -> None:
        self.hub.subscribe(subscription)
        missing = {c for c in subscription.channels if c not in self._confirmed}
        if not missing:
            return
        waiter = _Waiter(missing)
        self._waiters.append(waiter)
        try:
            if not waiter.done.wait(SUBSCRIBE_TIMEOUT):
                self.detach(subscription)
                raise BrokerUnavailable("could not subscribe in time; retry later")
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def detach(self, subscription: Subscription) -> None:
        # The owner greenlet notices the emptied channels on its next poll.
        self.hub.unsubscribe(subscription)

    def _wanted(self) -> set[str]:
        return self._always.union(self.hub.channels())

    # -- the owner greenlet --------------------------------------------------

    def _run(self) -> None:
        attempt = 0
        while not self._stopping:
            pubsub = None
            started = time.monotonic()
            try:
                pubsub = self.client.pubsub()
                self._session(pubsub)
            except gevent.GreenletExit:
                raise
            except (redis.RedisError, OSError, ProbeFailed) as exc:
                self._mark_down(f"{exc.__class__.__name__}: {exc}")
            except Exception as exc:  # a bug must not end delivery for the worker
                log.exception("subscriber session crashed")
                self._mark_down(f"crash: {exc.__class__.__name__}")
            finally:
                if pubsub is not None:
                    try:
                        pubsub.reset()
                    except (redis.RedisError, OSError):
                        pass
            if self._stopping:
                break
            # A session that lived a while earns a fresh backoff.
            attempt = 0 if time.monotonic() - started > 10 else attempt + 1
            delay = random.uniform(0, min(BACKOFF_MAX, BACKOFF_BASE * 2 ** attempt))
            self.reconnects += 1
            self._on_event("reconnect", "")
            gevent.sleep(delay)

    def _mark_down(self, why: str) -> None:
        if self._ready:
            log.warning("redis subscriber lost: %s; reconnecting", why)
        else:
            log.debug("redis subscriber still down: %s", why)
        self._ready = False
        self._why_not_ready = "subscriber down: " + why
        self._requested.clear()
        self._confirmed.clear()
        self._outstanding.clear()

    def _session(self, pubsub: redis.client.PubSub) -> None:
        self._requested.clear()
        self._confirmed.clear()
        self._outstanding.clear()
        if not self._had_session:
            # Where this worker's live delivery starts, taken before its first
            # SUBSCRIBE: streams attach during this session, so if it fails
            # before its catch-up, the next one catches up from here.
            self._last_seen = max(self._last_seen, self.store.last_id())
            self._had_session = True
        self.hub.take_channel_changes()  # all channels are compared now
        self._sync_channels(pubsub, self._wanted())
        # Wait for every SUBSCRIBE to be confirmed before reading history, so
        # nothing published after the snapshot can be missed.
        deadline = time.monotonic() + max(self.socket_timeout, 1.0)
        while not self._requested <= self._confirmed:
            if time.monotonic() > deadline:
                raise redis.TimeoutError("subscribe not confirmed")
            message = _next_message(pubsub, POLL_SECONDS)
            if message is not None:
                self._handle(message)
            gevent.sleep(0)
        self._catch_up()
        self._ready = True
        self._why_not_ready = ""
        self.last_probe_ok = time.time()
        log.info("redis subscriber connected: %d channels", len(self._confirmed))

        last_traffic = time.monotonic()
        probe_sent: float | None = None
        held: dict[str, Any] | None = None  # read, but left for the next round
        while not self._stopping:
            changed = self.hub.take_channel_changes()
            if changed:
                self._sync_channels(pubsub, changed)
            message = held if held is not None else _next_message(pubsub, POLL_SECONDS)
            held = None
            now = time.monotonic()
            if message is not None:
                last_traffic = now
                # Hand over what is already buffered (see DRAIN_MIN_FANOUT),
                # then let the streams run before reading again.
                drain_until = now + DRAIN_BUDGET_SECONDS
                handled = 0
                while message is not None:
                    if message.get("type") == "message" and _text(message.get("channel")) == self.probe_channel:
                        probe_sent = None
                        self.last_probe_ok = time.time()
                    else:
                        self._handle(message)
                    handled += 1
                    if handled >= DRAIN_MAX_MESSAGES or time.monotonic() >= drain_until:
                        break
                    message = _next_message(pubsub, 0)
                    if message is not None and self._narrow_backlog(message):
                        held = message
                        break
                gevent.sleep(0)
                continue
            # Yield even when the socket wait did not (an unpatched process).
            gevent.sleep(0)
            if probe_sent is not None:
                if now - probe_sent > self.probe_timeout:
                    raise ProbeFailed(f"no probe back in {self.probe_timeout:g}s")
            elif now - last_traffic > self.probe_interval:
                probe_sent = now
                if self.client.publish(self.probe_channel, b"probe") == 0:
                    # Redis says nobody is subscribed: our connection is gone
                    # server-side (CLIENT KILL, restart) even if the socket looks fine.
                    raise ProbeFailed("probe channel has no subscriber")

    def _narrow_backlog(self, message: dict[str, Any]) -> bool:
        """A narrow message for a stream that still has an event queued (see DRAIN_MIN_FANOUT)."""
        if message.get("type") != "message":
            return False
        return self.hub.narrow_backlog(_text(message.get("channel")), DRAIN_MIN_FANOUT)

    def _sync_channels(self, pubsub: redis.client.PubSub, candidates: set[str]) -> None:
        """SUBSCRIBE / UNSUBSCRIBE so that, among ``candidates``, exactly the
        wanted channels are requested (all of them at a session's start; in
        steady state only those the hub reports as changed)."""
        wanted = {channel for channel in candidates if channel in self._always or self.hub.has_channel(channel)}
        add = wanted - self._requested
        remove = (candidates - wanted) & self._requested
        if add:
            pubsub.subscribe(*sorted(add))
            self._requested |= add
            for channel in add:
                self._outstanding[channel] = self._outstanding.get(channel, 0) + 1
        if remove:
            # Forget the confirmation now: a client arriving before the
            # UNSUBSCRIBE reply must wait for a fresh SUBSCRIBE.
            pubsub.unsubscribe(*sorted(remove))
            self._requested -= remove
            self._confirmed -= remove

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        channel = _text(message.get("channel"))
        if kind == "message":
            data = message.get("data")
            try:
                delivery = delivery_from_payload(_text(data))
            except (ValueError, KeyError, TypeError):
                log.warning("dropping malformed message on %s", channel)
                return
            if delivery.id > self._last_seen:
                self._last_seen = delivery.id
            self.hub.dispatch(channel, delivery)
            self._on_event("delivered", channel)
        elif kind == "subscribe":
            left = self._outstanding.get(channel, 0) - 1
            if left > 0:
                self._outstanding[channel] = left
                return  # the reply to an earlier SUBSCRIBE: the latest is still on its way
            self._outstanding.pop(channel, None)
            if channel in self._requested:
                self._confirmed.add(channel)
                self._notify_waiters(channel)

    def _notify_waiters(self, channel: str) -> None:
        for waiter in list(self._waiters):
            waiter.missing.discard(channel)
            if not waiter.missing:
                waiter.done.set()
                self._waiters.remove(waiter)

    def _catch_up(self) -> None:
        """After a reconnect, deliver from history what was published while the
        pub/sub connection was down. Subscriptions drop ids they already have.

        Called once every channel is confirmed subscribed, so anything above
        ``cutoff`` arrives live; reading each chunk only up to ``cutoff`` keeps
        the chunks consistent with each other without one giant MULTI.
        """
        cutoff = self.store.last_id()
        if cutoff <= self._last_seen:
            return
        channels = sorted(self.hub.channels())
        pending: list[tuple[Delivery, str]] = []
        for start in range(0, len(channels), CATCH_UP_CHUNK):
            chunk = channels[start:start + CATCH_UP_CHUNK]
            found, _info, _last, _since = self.store.read_after(chunk, self._last_seen, upto=cutoff)
            for channel, stream in zip(chunk, found):
                pending.extend((delivery, channel) for delivery in stream)
        # Global id order, so each subscription sees its ids ascending.
        pending.sort(key=lambda pair: pair[0].id)
        self._end_streams_with_gaps(sorted({channel for _delivery, channel in pending}))
        for delivery, channel in pending:
            self.hub.dispatch(channel, delivery)
        self._last_seen = cutoff
        if pending:
            log.info("caught up %d events after reconnect", len(pending))
        self._on_event("catch_up", str(len(pending)))

    def _end_streams_with_gaps(self, channels: list[str]) -> None:
        """Channels trimmed past ``_last_seen`` while we were away lost events
        the catch-up cannot deliver: their streams would go on with a silent
        gap. End them first (before anything newer is queued), so they resume
        with their Last-Event-ID and the replay answers ``event: reset``."""
        lagged: set[str] = set()
        for start in range(0, len(channels), CATCH_UP_CHUNK):
            lagged.update(self.store.gaps(channels[start:start + CATCH_UP_CHUNK], self._last_seen))
        if not lagged:
            return
        ended = 0
        for subscription in self.hub.subscriptions():
            if not lagged.isdisjoint(subscription.channels):
                subscription.close(CloseReason.EVICTED)
                ended += 1
        log.warning("history trimmed during the outage on %d channels: ended %d streams to reset them",
                    len(lagged), ended)


def _next_message(pubsub: redis.client.PubSub, timeout: float) -> dict[str, Any] | None:
    """The next pub/sub message, waiting up to ``timeout`` for one to start.

    Not ``pubsub.get_message(timeout)``: that gives the whole message only
    ``timeout`` to arrive, and under load messages routinely straddle reads
    (with timeout 0 it fails at once). It then raises TimeoutError, and
    redis-py 8 has already reconnected the connection behind our back, before
    raising (its retry calls the failure handler first, even with no retries
    allowed), losing whatever was in flight. Here the wait for the first byte
    is ``timeout``; the rest of a begun message gets the socket timeout; and
    any error ends the session, so the broker reconnects and catches up from
    history.
    """
    connection = pubsub.connection
    if connection is None or not connection.can_read(timeout=timeout):
        return None
    message: dict[str, Any] | None = pubsub.handle_message(connection.read_response(push_request=True))
    return message
