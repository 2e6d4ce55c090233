"""The Redis broker: one pub/sub connection per worker process, owned by one
greenlet, whatever the number of local clients.

- The core asks for a channel when its first local client arrives
  (``subscribe``, which waits for Redis' confirmation) and releases it when
  the last one leaves (``unsubscribe``). The broadcast channel and this
  worker's probe channel are always subscribed.
- Request greenlets never touch the connection: they record what they want
  and wake the owner through a pipe; the owner sends SUBSCRIBE / UNSUBSCRIBE.
  Nothing polls.
- Liveness is proved by a round trip, not assumed (``redis_session.py``).
- The retry loop sits here, outside the session; a session that fails for
  any reason is torn down whole, and the next one resubscribes everything
  and has the listener catch up from history what was published meanwhile.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import time
import uuid

import gevent
import redis

from ..channels import ChannelNames
from ..events import Notification, Published
from . import BrokerListener, Health
from .redis_connect import RoleCheck
from .redis_session import ProbeFailed, Session, SessionSettings
from .redis_store import RedisStore, publish_or_unavailable
from .redis_wanted import Wanted

log = logging.getLogger("notifier.broker.redis")

SUBSCRIBE_TIMEOUT = 5.0
BACKOFF_BASE = 0.05
BACKOFF_MAX = 2.0


class RedisBroker:
    def __init__(self, names: ChannelNames, store: RedisStore, settings: SessionSettings,
                 subscribe_timeout: float = SUBSCRIBE_TIMEOUT, sentinel: bool = False):
        self.names = names
        # Sentinel: the subscriber checks its server's role, and a lost session
        # drops the idle command connections too (they may point at the old master).
        self.sentinel = sentinel
        self.store = store
        self.node_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.settings = settings
        self.probe_channel = names.probe(self.node_id)
        self.subscribe_timeout = subscribe_timeout
        self.wanted = Wanted({names.broadcast, self.probe_channel})
        self.reconnects = 0
        self._last_alive = 0.0
        self._listener: BrokerListener | None = None
        self._session: Session | None = None
        self._greenlet: gevent.Greenlet | None = None
        self._stopping = False
        self._why_not_ready = "starting"

    # -- the Broker protocol ---------------------------------------------------

    def start(self, listener: BrokerListener) -> None:
        if self._greenlet is None:
            self._listener = listener
            self.wanted.open()
            self._greenlet = gevent.spawn(self._run)
            log.info("redis broker started (node %s)", self.node_id)

    def stop(self) -> None:
        self._stopping = True
        if self._greenlet is not None:
            self._greenlet.kill(block=True, timeout=2)
            self._greenlet = None
        self.store.close()
        self.wanted.close()

    def subscribe(self, channels: list[str]) -> None:
        self.wanted.want(channels)
        self.wanted.wait_confirmed(channels, self.subscribe_timeout)

    def unsubscribe(self, channels: list[str]) -> None:
        for channel in channels:
            self.wanted.drop(channel)
        self.wanted.wake()

    def publish(self, notifications: list[Notification]) -> list[Published]:
        return publish_or_unavailable(self.store, notifications)

    def health(self) -> Health:
        session = self._session
        alive = max(self._last_alive, session.last_alive if session is not None else 0.0)
        if self._stopping:
            return Health(False, "stopping", "redis", self.reconnects, alive)
        if session is None or not session.live:
            return Health(False, self._why_not_ready, "redis", self.reconnects, alive)
        return Health(True, "ok", "redis", self.reconnects, alive)

    # -- the owner greenlet ----------------------------------------------------

    def _run(self) -> None:
        attempt = 0
        while not self._stopping:
            started = time.monotonic()
            role_check = RoleCheck(self.store.client.get_connection_kwargs()) if self.sentinel else None
            session = Session(self.store.client, self.wanted, self._listener, self.probe_channel,  # type: ignore[arg-type]
                              self.settings, role_check)
            self._session = session
            try:
                session.run()
            except gevent.GreenletExit:
                raise
            except (redis.RedisError, OSError, ProbeFailed) as exc:
                self._mark_down(f"{exc.__class__.__name__}: {exc}", session)
            except Exception as exc:  # a bug must not end delivery for the worker
                log.exception("subscriber session crashed")
                self._mark_down(f"crash: {exc.__class__.__name__}", session)
            finally:
                session.close()
                self._last_alive = max(self._last_alive, session.last_alive)
            if self.sentinel:
                self.store.client.connection_pool.disconnect(inuse_connections=False)
            if self._stopping:
                break
            # A session that lived a while earns a fresh backoff.
            attempt = 0 if time.monotonic() - started > 10 else attempt + 1
            self.reconnects += 1
            gevent.sleep(random.uniform(0, min(BACKOFF_MAX, BACKOFF_BASE * 2 ** attempt)))

    def _mark_down(self, why: str, session: Session) -> None:
        if session.live:
            log.warning("redis subscriber lost: %s; reconnecting", why)
        else:
            log.debug("redis subscriber still down: %s", why)
        session.live = False
        self._why_not_ready = "subscriber down: " + why
        self.wanted.go_down()
