"""``StreamLeases`` in Redis: one sorted set per user (``<prefix>streams:<user>``)
whose members are the user's open streams, each scored with the time its
lease runs out (Redis' clock, so pods with skewed clocks agree).

Taking a lease first drops the expired ones, then counts, then adds: one
script, so two pods cannot both take the last place. The leases asked for
in one turn of the event loop go to Redis together, in one pipeline (a ramp
of thousands of streams pays a round trip per batch, not per stream). Each process renews
the leases it holds every third of their lifetime, in one round trip for
all of them; a process that dies stops renewing and its leases run out, so
a count never leaks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import gevent
import redis
from gevent.event import AsyncResult
from redis.exceptions import NoScriptError, RedisClusterException

from ..channels import ChannelNames
from . import HeldLeases
from .redis_history import outage_is_unavailable

log = logging.getLogger("notifier.broker.redis")

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS[1]: the user's set. ARGV: lease id, limit, lease ms. Returns 1 (taken) or 0 (at the limit).
ACQUIRE_SCRIPT = _NOW + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
return 1
"""

# KEYS[1]: the user's set. ARGV: lease ms, then lease ids. XX: a lease
# released (or expired) meanwhile is not brought back.
RENEW_SCRIPT = _NOW + """
local ttl = tonumber(ARGV[1])
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], 'XX', now + ttl, ARGV[i]) end
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('PEXPIRE', KEYS[1], ttl) end
return 1
"""


class RedisStreamLeases:
    def __init__(self, client: redis.Redis, names: ChannelNames, lease_seconds: float = 60.0):
        self.client = client
        self.names = names
        self.lease_ms = int(lease_seconds * 1000)
        self.held = HeldLeases()
        self._acquire = client.register_script(ACQUIRE_SCRIPT)
        # redis-py's Cluster pipeline refuses scripts (EVALSHA is "blocked in
        # cluster mode"): on a Cluster each lease is its own call.
        self._pipelines = not isinstance(client, redis.RedisCluster)
        self._renew = client.register_script(RENEW_SCRIPT)
        self._renewer: gevent.Greenlet | None = None
        # Released leases not yet removed in Redis: removed by one greenlet
        # in one round trip, since a release may come from a finalizer (where
        # nothing may block) and thousands come at once in a drain.
        self._released: list[tuple[str, str]] = []
        self._remover: gevent.Greenlet | None = None
        # Leases asked for and not yet sent: (key, lease id, limit, where the answer goes).
        self._wanted: list[tuple[str, str, int, AsyncResult]] = []
        self._acquirer: gevent.Greenlet | None = None

    def _key(self, user_id: str) -> str:
        return self.names.stream_leases_key(user_id)

    def acquire(self, user_id: str, lease_id: str, limit: int) -> bool:
        if not self._pipelines:
            with outage_is_unavailable():
                taken = self._acquire(keys=[self._key(user_id)], args=[lease_id, limit, self.lease_ms])
            if taken:
                self.held.add(user_id, lease_id)
            return bool(taken)
        answer: AsyncResult = AsyncResult()
        self._wanted.append((self._key(user_id), lease_id, limit, answer))
        if self._acquirer is None:
            self._acquirer = gevent.spawn(self._acquire_wanted)
        with outage_is_unavailable():
            taken = answer.get()  # raises what the batch's round trip raised
        if taken:
            self.held.add(user_id, lease_id)
        return bool(taken)

    def _acquire_wanted(self) -> None:
        """Send the leases asked for so far in one pipeline, until none are left."""
        try:
            while self._wanted:
                batch, self._wanted = self._wanted, []
                try:
                    pipe = self.client.pipeline(transaction=False)
                    for key, lease_id, limit, _ in batch:
                        # EVALSHA itself, not the Script through the pipeline: that asks
                        # SCRIPT EXISTS first, a second round trip per batch. A server
                        # that does not know the script yet answers NOSCRIPT, below.
                        pipe.evalsha(self._acquire.sha, 1, key, lease_id, limit, self.lease_ms)
                    replies = pipe.execute(raise_on_error=False)
                except Exception as exc:  # noqa: BLE001 - every waiter gets it; none may hang
                    for *_, answer in batch:
                        answer.set_exception(exc)
                    continue
                for (key, lease_id, limit, answer), reply in zip(batch, replies):
                    if isinstance(reply, NoScriptError):  # a node that never ran it: one call loads it
                        try:
                            reply = self._acquire(keys=[key], args=[lease_id, limit, self.lease_ms])
                        except Exception as exc:  # noqa: BLE001 - its waiter gets it; none may hang
                            reply = exc
                    if isinstance(reply, BaseException):
                        answer.set_exception(reply)
                    else:
                        answer.set(reply)
        finally:
            self._acquirer = None

    def release(self, user_id: str, lease_id: str) -> None:
        self.held.discard(user_id, lease_id)
        self._released.append((self._key(user_id), lease_id))
        if self._remover is None:
            self._remover = gevent.spawn(self._remove_released)

    def _remove_released(self) -> None:
        try:
            while self._released:
                batch, self._released = self._released, []
                pipe = self.client.pipeline(transaction=False)
                for key, lease_id in batch:
                    pipe.zrem(key, lease_id)
                try:
                    pipe.execute()
                except redis.RedisError as exc:
                    log.debug("could not release %d stream leases (they expire): %s", len(batch),
                              exc.__class__.__name__)
        finally:
            self._remover = None

    def renew(self) -> None:
        """Renew every lease this process holds: in one round trip, or on a
        Cluster one call per user."""
        if not self.held:
            return
        if not self._pipelines:  # one call per user, each to its key's shard
            failed: Exception | None = None
            for user_id, leases in list(self.held.items()):
                try:
                    self._renew(keys=[self._key(user_id)], args=[self.lease_ms, *leases])
                except (redis.RedisError, RedisClusterException) as exc:
                    failed = exc  # one shard down: the users on the others are still renewed
            if failed is not None:
                raise failed
            return
        pipe = self.client.pipeline(transaction=False)
        for user_id, leases in list(self.held.items()):
            self._renew(keys=[self._key(user_id)], args=[self.lease_ms, *leases], client=pipe)
        pipe.execute()

    def start(self) -> None:
        if self._renewer is None:
            self._renewer = gevent.spawn(self._run, self.lease_ms / 3000)

    def stop(self) -> None:
        if self._renewer is not None:
            self._renewer.kill(block=False)
            self._renewer = None

    def _run(self, interval: float, sleep: Callable[[float], None] = gevent.sleep) -> None:
        while True:
            sleep(interval)
            try:
                self.renew()
            except (redis.RedisError, RedisClusterException) as exc:  # the latter is not a RedisError
                log.warning("could not renew stream leases: %s", exc.__class__.__name__)
