"""Read markers in Redis: per user a hash (``up_to``) and a sorted set of
single read ids after it, both expiring with the history's age. Survive
restarts of the service (and of Redis, with its persistence)."""

from __future__ import annotations

from typing import Any

from ..channels import ChannelNames
from ..events import EventId, ReadState, format_event_id, parse_event_id
from .redis_store import text

# Moves the marker forward only (two tabs marking at once keep the newer), and
# drops the single ids it now covers.
MARK_UP_TO = """
local ms, seq = tonumber(ARGV[1]), tonumber(ARGV[2])
local cur = redis.call('HMGET', KEYS[1], 'ms', 'seq')
if cur[1] and (tonumber(cur[1]) > ms or (tonumber(cur[1]) == ms and tonumber(cur[2]) >= seq)) then
  ms, seq = tonumber(cur[1]), tonumber(cur[2])
else
  redis.call('HSET', KEYS[1], 'ms', ARGV[1], 'seq', ARGV[2])
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. string.format('%d', ms))
for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], string.format('%d', ms), string.format('%d', ms))) do
  if tonumber(string.match(member, '-(%d+)$')) <= seq then redis.call('ZREM', KEYS[2], member) end
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
return 1
"""


class RedisReadMarkers:
    def __init__(self, client: Any, names: ChannelNames, max_age_seconds: int = 86400, max_ids: int = 1000):
        """``client``: a redis.Redis, or a RedisCluster (both keys share the user's hash tag)."""
        self.client = client
        self.names = names
        self.ttl = max(1, int(max_age_seconds))
        self.max_ids = max_ids
        self._mark_up_to = client.register_script(MARK_UP_TO)

    def _keys(self, user_id: str) -> tuple[str, str]:
        channel = self.names.user(user_id)[len(self.names.prefix):]
        return f"{self.names.prefix}read:{channel}", f"{self.names.prefix}read-ids:{channel}"

    def state(self, user_id: str) -> ReadState:
        marker, ids = self._keys(user_id)
        pipe = self.client.pipeline(transaction=True)
        pipe.hmget(marker, "ms", "seq")
        pipe.zrange(ids, 0, -1)
        (ms, seq), members = pipe.execute()
        up_to: EventId = (int(ms), int(seq)) if ms is not None and seq is not None else (0, 0)
        parsed = (parse_event_id(text(member)) for member in members)
        return ReadState(up_to, frozenset(i for i in parsed if i is not None and i > up_to))

    def mark_up_to(self, user_id: str, up_to: EventId) -> ReadState:
        self._mark_up_to(keys=list(self._keys(user_id)), args=[up_to[0], up_to[1], self.ttl])
        return self.state(user_id)

    def mark_ids(self, user_id: str, ids: list[EventId]) -> ReadState:
        marker, key = self._keys(user_id)
        pipe: Any = self.client.pipeline(transaction=True)
        # Score: the id's milliseconds (exact in a double); the newest max_ids are kept.
        pipe.zadd(key, {format_event_id(i): i[0] for i in ids})
        pipe.zremrangebyrank(key, 0, -(self.max_ids + 1))
        pipe.expire(key, self.ttl)
        pipe.expire(marker, self.ttl)
        pipe.execute()
        return self.state(user_id)
