"""``TicketStore`` and ``RateLimiter`` in Redis, shared by every pod.

A ticket is taken with GETDEL (Redis >= 6.2): one command, so two pods
redeeming the same ticket at once cannot both get it. The token bucket is
one Lua script on Redis' clock, so pods with skewed clocks share one bucket
fairly and two requests never both take the last token.
"""

from __future__ import annotations

import redis

from ..errors import BrokerUnavailable

BUCKET_SCRIPT = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local bucket = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(bucket[1]) or burst
local last = tonumber(bucket[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - last) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
-- A full bucket is the same as no bucket: let idle publishers' keys go.
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return tostring(wait)
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


class RedisRateLimiter:
    def __init__(self, client: redis.Redis, prefix: str, rate: float, burst: int):
        self.rate = rate
        self.burst = burst
        self.prefix = prefix + "rate:"
        self._script = client.register_script(BUCKET_SCRIPT)

    def acquire(self, key: str) -> float:
        try:
            wait = self._script(keys=[self.prefix + key], args=[repr(self.rate), self.burst])
        except redis.RedisError:
            raise BrokerUnavailable() from None
        return float(wait)
