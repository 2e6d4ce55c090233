"""One connected life of a worker's Redis subscriber: connect and subscribe,
confirm, catch up, read. Any failure ends the session whole; the broker's
retry loop (``redis.py``) starts the next one.

Liveness is checked by a round trip, not assumed: when the connection has
been idle for ``probe_interval`` the session PUBLISHes to its own probe
channel and expects the message back within ``probe_timeout``. redis-py's
``health_check_interval`` only *sends* a PING, and a half-open socket looks
healthy: that is how subscribers elsewhere died silently.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import gevent
import redis
from gevent import select

from ..runtime.redis import connection_fileno, next_ready_pubsub_message
from . import BrokerListener
from .redis_connect import RoleCheck
from .redis_store import text
from .redis_wanted import Wanted

log = logging.getLogger("notifier.broker.redis")

# The messages already read from the socket are handed over back to back (at
# most DRAIN_MAX_MESSAGES, for at most DRAIN_BUDGET_SECONDS) before the
# streams run: each stream then wakes once and writes what it got in one
# chunk, one greenlet switch and one send() per round instead of per event.
DRAIN_MAX_MESSAGES = 128
DRAIN_BUDGET_SECONDS = 0.005
FALLBACK_POLL_SECONDS = 0.02


class ProbeFailed(Exception):
    """The pub/sub connection did not deliver our own probe back in time."""


@dataclass(frozen=True)
class SessionSettings:
    socket_timeout: float = 5.0
    probe_interval: float = 5.0
    probe_timeout: float = 3.0


class Session:
    def __init__(self, client: redis.Redis, wanted: Wanted, listener: BrokerListener, probe_channel: str,
                 settings: SessionSettings, role_check: RoleCheck | None = None):
        self.client = client
        # Sentinel: the server we read must still be the master (see RoleCheck).
        self.role_check = role_check
        self.wanted = wanted
        self.listener = listener
        self.probe_channel = probe_channel
        self.settings = settings
        self.pubsub = client.pubsub()
        self.live = False
        self.last_alive = 0.0  # time.time() of the last message or probe that came back
        self._requested: set[str] = set()
        # SUBSCRIBE replies still to come per channel: after SUBSCRIBE,
        # UNSUBSCRIBE, SUBSCRIBE of one channel, the first reply must not
        # confirm the second request (Redis has not processed it yet).
        self._outstanding: dict[str, int] = {}
        self._probe_sent: float | None = None
        self._last_traffic = time.monotonic()
        # Messages that arrive while the session still confirms its channels:
        # handed over only after the catch-up, so nothing newer overtakes
        # what the outage missed (a subscription drops ids below its newest).
        self._held: list[tuple[str, str]] | None = []

    def run(self) -> None:
        self.wanted.drain()  # every wanted channel is subscribed now
        self._sync(set(self.wanted.channels))
        self._confirm_all()
        self._check_role()
        # Before any waiter is released: a stream starts once what the outage
        # missed is queued ahead of anything newer.
        self._caught_up()
        held, self._held = self._held or [], None
        for channel, payload in held:
            self.listener.deliver(channel, payload)
        self.live = True
        self.last_alive = time.time()
        self.wanted.go_live()
        log.info("redis subscriber connected: %d channels", len(self.wanted.confirmed))
        self._read_forever()

    def _caught_up(self) -> None:
        self.listener.resubscribed()

    def close(self) -> None:
        try:
            self.pubsub.reset()
        except (redis.RedisError, OSError):
            pass
        if self.role_check is not None:
            self.role_check.close()

    def _check_role(self) -> None:
        if self.role_check is None or self.pubsub.connection is None:
            return
        role = self.role_check.role(self.pubsub.connection)
        if role != "master":
            raise ProbeFailed(f"the subscriber's server is a {role} now (a demoted master)")

    # -- subscriptions -----------------------------------------------------------

    def _sync(self, candidates: set[str]) -> None:
        """SUBSCRIBE / UNSUBSCRIBE so that, among ``candidates``, exactly the
        wanted channels are requested."""
        wanted = {channel for channel in candidates if channel in self.wanted.channels}
        add = wanted - self._requested
        remove = (candidates - wanted) & self._requested
        # Left and wanted again before we sent the UNSUBSCRIBE: still
        # subscribed, so confirmed again at once (unless a SUBSCRIBE is in flight).
        for channel in (wanted & self._requested) - self.wanted.confirmed:
            if not self._outstanding.get(channel):
                self.wanted.confirm(channel)
        if add:
            self._subscribe(sorted(add))
            self._requested |= add
            for channel in add:
                self._outstanding[channel] = self._outstanding.get(channel, 0) + 1
        if remove:
            self._unsubscribe(sorted(remove))
            self._requested -= remove

    def _subscribe(self, channels: list[str]) -> None:
        self.pubsub.subscribe(*channels)

    def _unsubscribe(self, channels: list[str]) -> None:
        self.pubsub.unsubscribe(*channels)

    def _confirm_all(self) -> None:
        """Wait until Redis confirmed every SUBSCRIBE, so nothing published
        after the catch-up's snapshot can be missed."""
        deadline = time.monotonic() + max(self.settings.socket_timeout, 1.0)
        while True:
            more = self._read_batch()
            if self._requested <= self.wanted.confirmed:
                return
            left = deadline - time.monotonic()
            if left <= 0:
                raise redis.TimeoutError("subscribe not confirmed")
            if more:
                # Whole replies may still wait in the parser (one SUBSCRIBE of
                # many channels answers them all at once): read on, not wait.
                gevent.sleep(0)
                continue
            _readable, woken = self._wait(left)
            if woken:
                self._sync(self.wanted.drain())

    # -- reading -----------------------------------------------------------------

    def _read_forever(self) -> None:
        while True:
            more = self._read_batch()
            self._check_probe()
            if more:
                gevent.sleep(0)  # let the streams write what they got
                continue
            # Waiting lets the streams write what they got, too.
            _readable, woken = self._wait(self._idle_timeout())
            if woken:
                self._sync(self.wanted.drain())

    def _read_batch(self) -> bool:
        """Hand over every message that is whole now; True when the budget ran
        out first. After False, nothing whole is left in the parser: what is
        still to come can only come from the socket (``_wait``)."""
        deadline = time.monotonic() + DRAIN_BUDGET_SECONDS
        for _ in range(DRAIN_MAX_MESSAGES):
            message = next_ready_pubsub_message(self.pubsub)
            if message is None:
                return False
            self._last_traffic = time.monotonic()
            self._handle(message)
            if self._last_traffic >= deadline:
                return True
        return True

    # The pub/sub message kinds (sharded pub/sub has its own: redis_cluster.py).
    MESSAGE = "message"
    SUBSCRIBED = "subscribe"

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        channel = text(message.get("channel"))
        if kind == self.MESSAGE:
            self.last_alive = time.time()
            if channel == self.probe_channel:
                self._probe_sent = None
            elif self._held is not None:
                self._held.append((channel, text(message.get("data"))))
            else:
                self.listener.deliver(channel, text(message.get("data")))
        elif kind == self.SUBSCRIBED:
            left = self._outstanding.get(channel, 0) - 1
            if left > 0:
                self._outstanding[channel] = left
                return  # the reply to an earlier SUBSCRIBE: the latest is still on its way
            self._outstanding.pop(channel, None)
            if channel in self._requested:
                self.wanted.confirm(channel)
                self._confirmed(channel)
        else:
            self._other(kind, channel)

    def _confirmed(self, channel: str) -> None:
        """Hook: ``channel`` was just confirmed."""

    def _other(self, kind: Any, channel: str) -> None:
        """Hook: any other message (unsubscribe replies and pushes)."""

    def _wait(self, timeout: float) -> tuple[bool, bool]:
        """Until the socket is readable, the core wants other channels (woken),
        or ``timeout``. Called after ``_read_batch`` returned False, so no whole
        message waits in the parser (the first part of one may: asking the
        parser would then say readable and spin)."""
        connection = self.pubsub.connection
        if connection is None:
            raise redis.ConnectionError("pub/sub connection is gone")
        fd = connection_fileno(connection)
        if fd is None:  # a redis-py release we were not written against: poll
            readable = connection.can_read(timeout=min(timeout, FALLBACK_POLL_SECONDS))
            woken, _, _ = select.select([self.wanted.wake_fd], [], [], 0)
            gevent.sleep(0)
            return readable, bool(woken)
        ready, _, _ = select.select([fd, self.wanted.wake_fd], [], [], timeout)
        return fd in ready, self.wanted.wake_fd in ready

    # -- liveness ----------------------------------------------------------------

    def _idle_timeout(self) -> float:
        now = time.monotonic()
        if self._probe_sent is not None:
            return max(0.0, self._probe_sent + self.settings.probe_timeout - now)
        return max(0.0, self._last_traffic + self.settings.probe_interval - now)

    def _check_probe(self) -> None:
        now = time.monotonic()
        if self._probe_sent is not None:
            if now - self._probe_sent > self.settings.probe_timeout:
                raise ProbeFailed(f"no probe back in {self.settings.probe_timeout:g}s")
        elif now - self._last_traffic > self.settings.probe_interval:
            self._check_role()
            self._probe_sent = now
            if self._send_probe() == 0:
                # Redis says nobody is subscribed: our connection is gone
                # server-side (CLIENT KILL, restart) even if the socket looks fine.
                raise ProbeFailed("probe channel has no subscriber")

    def _send_probe(self) -> int:
        return int(self.client.publish(self.probe_channel, b"probe"))
