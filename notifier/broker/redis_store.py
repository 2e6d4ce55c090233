"""Publishing to Redis, shared by the worker's broker and by
``notifier.Publisher`` so both write exactly the same envelope and history.

Each publish runs one Lua script: it draws the next id from one sequence
shared by all channels, XADDs the event to the channel's stream (bounded by
count and age) and PUBLISHes it, atomically and in one round trip. So an
event is never live without being replayable, nor stored without being
published, and ids are ordered across channels.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import redis

from ..channels import ChannelNames
from ..envelope import LUA_SPLICE, body_without_id
from ..errors import BrokerUnavailable
from ..events import Notification, Published
from ..runtime.redis import socket_timeout
from .redis_connect import make_client
from .redis_script import ScriptRunner

__all__ = ["PUBLISH_SCRIPT", "RedisStore", "make_client", "text"]

log = logging.getLogger("notifier.broker.redis")

# The head of both publish scripts (one Redis here, a Cluster slot in
# redis_cluster_store.py): the bounds and the deadline from ARGV[1..3], Redis'
# clock, and how one event is kept in its channel's history.
LUA_PUBLISH_PRELUDE = """
local maxlen = ARGV[1]
local max_age_ms = tonumber(ARGV[2])
local deadline = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- A script that runs after its caller gave up (Redis was stalled: SIGSTOP,
-- a long fork, a slow disk) must not store anything: the caller answered 503
-- and the publisher will retry, so storing it would deliver it twice.
if deadline > 0 and now > deadline then
  return redis.error_reply('STALE publish ran after its deadline; nothing stored')
end
local function keep(history, id, payload)
  redis.call('XADD', history, 'MAXLEN', maxlen, id, 'd', payload)
  redis.call('XTRIM', history, 'MINID', '~', string.format('%d-0', now - max_age_ms))
  redis.call('PEXPIRE', history, max_age_ms)
end
"""

PUBLISH_SCRIPT = LUA_PUBLISH_PRELUDE + """
local last = redis.call('HMGET', KEYS[1], 'ms', 'seq')
-- No sequence: a new deployment, or a Redis that lost its data. Remember the
-- first id of this history, so a resume point below it is known to have lost
-- events (a reset), instead of silently replaying only what came after.
local fresh = not last[1]
local ms = tonumber(last[1]) or 0
local seq = tonumber(last[2]) or -1
local out = {}
local first_id = nil
for i = 2, #KEYS do
  if now > ms then ms = now; seq = 0 else seq = seq + 1 end
  local id = string.format('%d-%d', ms, seq)
  first_id = first_id or id
  local channel = ARGV[2 * i]
  local body = ARGV[2 * i + 1]
  local payload = """ + LUA_SPLICE + """
  keep(KEYS[i], id, payload)
  out[#out + 1] = id
  out[#out + 1] = redis.call('PUBLISH', channel, payload)
end
redis.call('HSET', KEYS[1], 'ms', ms, 'seq', seq)
if fresh then redis.call('HSET', KEYS[1], 'since', first_id) end
return out
"""

CLOCK_REFRESH_SECONDS = 30.0


class RedisStore:
    """Runs the publish script; ``close`` releases the client's connections."""

    def __init__(self, client: redis.Redis, names: ChannelNames, history_max_events: int = 1000,
                 history_max_age_seconds: float = 86400, min_replicas: int = 0):
        self.client = client
        self.names = names
        self.history_max_events = history_max_events
        self.history_max_age_ms = int(history_max_age_seconds * 1000)
        pool = client.connection_pool
        timeout = socket_timeout(client)
        # Publishing has its own connections (as many again as the pool's):
        # see redis_script.py for why.
        self._script = ScriptRunner(pool, PUBLISH_SCRIPT, getattr(pool, "max_connections", 64), timeout,
                                    min_replicas, replica_timeout_ms(timeout))
        # A publish whose reply times out must not be stored later (the caller
        # answers 503 and the publisher retries): the script refuses to run
        # once half the socket timeout has passed since it was sent, which
        # leaves the other half for the reply and for clock-offset error.
        self._stale_after_ms = float(timeout) * 500 if timeout else 0.0
        self._clock_offset_ms: float | None = None  # Redis TIME minus our clock
        self._clock_measured_at = 0.0

    def _deadline_ms(self) -> int:
        """The latest Redis time at which a publish sent now may still run (0: no limit)."""
        if not self._stale_after_ms:
            return 0
        # Our side uses the monotonic clock (a wall-clock step here cannot
        # shift deadlines); Redis' clock is measured, so skew between the hosts
        # cannot refuse every publish (or accept stale ones).
        now = time.monotonic()
        if self._clock_offset_ms is None or now - self._clock_measured_at > CLOCK_REFRESH_SECONDS:
            before = time.monotonic()
            seconds, micros = self.client.time()
            after = time.monotonic()
            self._clock_offset_ms = seconds * 1000 + micros / 1000 - (before + after) * 500
            self._clock_measured_at = after
            now = after
        return int(now * 1000 + self._clock_offset_ms + self._stale_after_ms)

    def publish(self, notifications: Sequence[Notification]) -> list[Published]:
        """Raises redis.RedisError (ConnectionError, TimeoutError, or ResponseError
        "STALE" when Redis ran it too late to answer in time) on failure; then
        nothing was stored."""
        if not notifications:
            return []
        keys: list[str] = [self.names.sequence_key]
        args: list[Any] = []
        for notification in notifications:
            channel = self.names.for_target(notification.target)
            keys.append(self.names.history_key(channel))
            args.extend((channel, body_without_id(notification)))
        try:
            # The deadline is taken once a connection is ours, so waiting for
            # one under load cannot make a healthy Redis look stalled.
            reply = self._script(keys, args, head=lambda: (self.history_max_events, self.history_max_age_ms,
                                                           self._deadline_ms()))
        except redis.ResponseError as exc:
            if str(exc).startswith("STALE"):
                # Either Redis really was stalled, or its clock stepped: measure again next time.
                self._clock_offset_ms = None
            raise
        return [
            Published(text(reply[2 * i]), notification, int(reply[2 * i + 1]))
            for i, notification in enumerate(notifications)
        ]

    def close(self) -> None:
        self._script.disconnect()
        self.client.close()
        self.client.connection_pool.disconnect()  # close() leaves a pool it was given open


def replica_timeout_ms(socket_timeout: float | None) -> int:
    """WAIT's timeout: a quarter of the socket timeout, so script (which may
    start up to half of it late) plus WAIT plus the reply fit in it."""
    return max(1, int((socket_timeout or 4.0) * 250))


def text(value: Any) -> str:
    """A reply value as str (redis-py gives bytes without decode_responses)."""
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def publish_or_unavailable(store: Any, notifications: list[Notification]) -> list[Published]:
    """``store.publish`` (one Redis or a Cluster), with any Redis failure
    answered as BrokerUnavailable (503: nothing was stored, retry)."""
    try:
        result: list[Published] = store.publish(notifications)
        return result
    except redis.RedisError as exc:
        log.warning("publish failed: %s", exc.__class__.__name__)
        raise BrokerUnavailable() from None
