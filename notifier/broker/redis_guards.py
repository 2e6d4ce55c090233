"""``TicketStore`` and ``RateLimiter`` in Redis, shared by every pod.

A ticket is taken with GETDEL (Redis >= 6.2): one command, so two pods
redeeming the same ticket at once cannot both get it. The token bucket is
one Lua script on Redis' clock, so pods with skewed clocks share one bucket
fairly and two requests never both take the last token.

A busy publisher would pay a Redis round trip per publish for its bucket
(and queue for the guards' few connections), so a worker takes its tokens a
few at a time and spends them locally for at most ``GRANT_SECONDS``: the
bucket is never overdrawn (tokens are taken before they are spent; a grant
not spent in time is dropped, never returned), only shared a little less
evenly between workers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis

from ..errors import BrokerUnavailable

BUCKET_SCRIPT = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local bucket = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(bucket[1]) or burst
local last = tonumber(bucket[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - last) * rate)
local granted = math.min(want, math.floor(tokens))
local wait = 0
if granted >= 1 then tokens = tokens - granted else granted = 0; wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
-- A full bucket is the same as no bucket: let idle publishers' keys go.
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {granted, tostring(wait)}
"""


class RedisTickets:
    def __init__(self, client: redis.Redis, prefix: str):
        self.client = client
        self.prefix = prefix + "ticket:"

    def put(self, key: str, value: str, ttl_seconds: float) -> None:
        try:
            self.client.set(self.prefix + key, value, px=max(1, int(ttl_seconds * 1000)))
        except redis.RedisError:
            raise BrokerUnavailable() from None

    def take(self, key: str) -> str | None:
        try:
            value = self.client.getdel(self.prefix + key)
        except redis.RedisError:
            raise BrokerUnavailable() from None
        return None if value is None else value.decode("utf-8") if isinstance(value, bytes) else str(value)


GRANT_SECONDS = 1.0  # how long a worker may spend tokens it took ahead
GRANTS_KEPT = 1024  # publishers with tokens in hand, per worker


@dataclass
class _Grant:
    tokens: int
    until: float  # time.monotonic()


class RedisRateLimiter:
    def __init__(self, client: redis.Redis, prefix: str, rate: float, burst: int):
        self.rate = rate
        self.burst = burst
        self.prefix = prefix + "rate:"
        # A twentieth of a second's worth (a tenth of the burst at most): few
        # round trips for a busy publisher, one token at a time for a slow one.
        self.chunk = max(1, min(burst // 10, int(rate / 20)))
        self._script = client.register_script(BUCKET_SCRIPT)
        self._grants: dict[str, _Grant] = {}

    def acquire(self, key: str) -> float:
        now = time.monotonic()
        grant = self._grants.get(key)
        if grant is not None and grant.tokens > 0 and now < grant.until:
            grant.tokens -= 1
            return 0.0
        try:
            granted, wait = self._script(keys=[self.prefix + key], args=[repr(self.rate), self.burst, self.chunk])
        except redis.RedisError:
            raise BrokerUnavailable() from None
        if int(granted) < 1:
            return max(float(wait), 1e-6)
        if len(self._grants) >= GRANTS_KEPT:
            self._grants.clear()
        self._grants[key] = _Grant(int(granted) - 1, now + GRANT_SECONDS)
        return 0.0
