"""``StreamLeases`` in Redis: one sorted set per user (``<prefix>streams:<user>``)
whose members are the user's open streams, each scored with the time its
lease runs out (Redis' clock, so pods with skewed clocks agree).

Taking a lease first drops the expired ones, then counts, then adds: one
script, so two pods cannot both take the last place. Each process renews
the leases it holds every third of their lifetime, in one round trip for
all of them; a process that dies stops renewing and its leases run out, so
a count never leaks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import gevent
import redis

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
        self._renew = client.register_script(RENEW_SCRIPT)
        self._renewer: gevent.Greenlet | None = None
        # Released leases not yet removed in Redis: removed by one greenlet
        # in one round trip, since a release may come from a finalizer (where
        # nothing may block) and thousands come at once in a drain.
        self._released: list[tuple[str, str]] = []
        self._remover: gevent.Greenlet | None = None

    def _key(self, user_id: str) -> str:
        return self.names.stream_leases_key(user_id)

    def acquire(self, user_id: str, lease_id: str, limit: int) -> bool:
        with outage_is_unavailable():
            taken = self._acquire(keys=[self._key(user_id)], args=[lease_id, limit, self.lease_ms])
        if taken:
            self.held.add(user_id, lease_id)
        return bool(taken)

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
        """Renew every lease this process holds, in one round trip."""
        if not self.held:
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
            except redis.RedisError as exc:
                log.warning("could not renew stream leases: %s", exc.__class__.__name__)
