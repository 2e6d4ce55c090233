"""Redis history and publishing, shared by the worker's broker and by
``notifier.Publisher`` so both write exactly the same wire format.

Each publish runs one Lua script: it draws the next id from one sequence
shared by all channels, XADDs the event to the channel's stream (bounded by
count and age) and PUBLISHes it, atomically and in one round trip. So an
event is never live without being replayable, nor stored without being
published, and ids are ordered across channels.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ..channels import ChannelNames
from ..events import Delivery, EventId, Notification, delivery_from_payload, format_event_id, parse_event_id
from . import Published, Replay, merge_by_id
from .redis_script import ScriptRunner

PUBLISH_SCRIPT = """
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
  local payload = '{"id":"' .. id .. '",' .. ARGV[2 * i + 1]
  redis.call('XADD', KEYS[i], 'MAXLEN', maxlen, id, 'd', payload)
  redis.call('XTRIM', KEYS[i], 'MINID', '~', string.format('%d-0', now - max_age_ms))
  redis.call('PEXPIRE', KEYS[i], max_age_ms)
  out[#out + 1] = id
  out[#out + 1] = redis.call('PUBLISH', channel, payload)
end
redis.call('HSET', KEYS[1], 'ms', ms, 'seq', seq)
if fresh then redis.call('HSET', KEYS[1], 'since', first_id) end
return out
"""

CLOCK_REFRESH_SECONDS = 30.0


def make_client(url: str, socket_timeout: float = 5.0, max_connections: int = 64) -> redis.Redis:
    """A client for commands (not pub/sub).

    Blocking pool: under gevent many greenlets share a few connections and
    wait for one rather than fail. No automatic retries: a publish whose reply
    was lost may have run, so retrying is the caller's decision (the API
    answers 503 and the publisher retries).
    """
    pool = redis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=socket_timeout,
        socket_timeout=socket_timeout,
        socket_connect_timeout=socket_timeout,
        retry=Retry(NoBackoff(), 0),
        protocol=2,
    )
    return redis.Redis(connection_pool=pool)


class RedisStore:
    def __init__(self, client: redis.Redis, names: ChannelNames, history_max_events: int = 1000,
                 history_max_age_seconds: float = 86400, replay_max_events: int = 1000):
        self.client = client
        self.names = names
        self.history_max_events = history_max_events
        self.history_max_age_ms = int(history_max_age_seconds * 1000)
        self.replay_max_events = replay_max_events
        pool = client.connection_pool
        timeout = pool.connection_kwargs.get("socket_timeout")
        # Publishing has its own connections (as many again as the pool's):
        # see redis_script.py for why.
        self._script = ScriptRunner(pool, PUBLISH_SCRIPT, getattr(pool, "max_connections", 64), timeout)
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
            args.extend((channel, notification.body_without_id()))
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

    def last_id(self) -> EventId:
        ms, seq = self.client.hmget(self.names.sequence_key, "ms", "seq")
        if ms is None or seq is None:
            return (0, 0)
        return int(ms), int(seq)

    def read_after(self, channels: Sequence[str], after: EventId, with_info: bool = False,
                   upto: EventId | None = None) -> tuple[list[list[Delivery]], list[Any], EventId, EventId | None]:
        """One MULTI/EXEC snapshot: for each channel the events after ``after``
        (and, with_info, its trim horizon), plus the sequence's last id and the
        first id of the current history (None when not recorded).

        A snapshot matters: read channel by channel and an event published in
        between on an already-read channel would be skipped for good.
        """
        pipe = self.client.pipeline(transaction=True)
        start = "(" + format_event_id(after)
        end = format_event_id(upto) if upto is not None else "+"
        count = None if upto is not None else self.replay_max_events + 1
        for channel in channels:
            pipe.xrange(self.names.history_key(channel), min=start, max=end, count=count)
        if with_info:
            for channel in channels:
                pipe.exists(self.names.history_key(channel))
        pipe.hmget(self.names.sequence_key, "ms", "seq", "since")
        results = pipe.execute()
        streams = [[_delivery(entry) for entry in results[i]] for i in range(len(channels))]
        info: list[Any] = []
        if with_info:
            existing = [channel for channel, exists in zip(channels, results[len(channels):2 * len(channels)]) if exists]
            info = self._trim_horizons(existing)
        ms, seq, since = results[-1]
        last = (int(ms), int(seq)) if ms is not None and seq is not None else (0, 0)
        # The first id of the current history (see PUBLISH_SCRIPT), if recorded.
        first = parse_event_id(text(since)) if since is not None else None
        return streams, info, last, first

    def _horizons(self, channels: Sequence[str]) -> list[EventId | None]:
        """For each channel (in order): its oldest kept id if its history has
        ever been trimmed, else None.

        A resume point below it may have lost events. (Redis 7.0 does not
        record trimmed ids in max-deleted-entry-id, so compare entries-added
        with the length instead.) This can reset a client that was exactly
        at the last trimmed event, never miss a real gap.
        """
        if not channels:
            return []
        pipe = self.client.pipeline(transaction=False)
        for channel in channels:
            pipe.xinfo_stream(self.names.history_key(channel))
        return [_horizon(info) for info in pipe.execute(raise_on_error=False)]

    def _trim_horizons(self, channels: Sequence[str]) -> list[EventId]:
        return [horizon for horizon in self._horizons(channels) if horizon is not None]

    def gaps(self, channels: Sequence[str], after: EventId) -> list[str]:
        """The channels whose history no longer reaches back to ``after``
        (same conservative rule as replay): a reader at ``after`` may have
        missed trimmed events on them."""
        return [channel for channel, horizon in zip(channels, self._horizons(channels))
                if horizon is not None and horizon > after]

    def replay(self, channels: Sequence[str], after: EventId) -> Replay:
        streams, horizons, last, since = self.read_after(channels, after, with_info=True)
        if after > last:
            return Replay(reset=True, reason="unknown_id")
        if since is not None and after < since:
            # The history (and the sequence) began after this id: Redis lost
            # its data (a restart without persistence). What the client missed
            # before that is gone; say so rather than replay only what followed.
            return Replay(reset=True, reason="history_lost")
        if after[0] < int(time.time() * 1000) - self.history_max_age_ms:
            return Replay(reset=True, reason="too_old")
        if any(horizon > after for horizon in horizons):
            return Replay(reset=True, reason="too_old")
        if any(len(stream) > self.replay_max_events for stream in streams):
            return Replay(reset=True, reason="too_many")
        events = merge_by_id(streams)
        if len(events) > self.replay_max_events:
            return Replay(reset=True, reason="too_many")
        return Replay(events)

    def recent(self, channels: Sequence[str], before: EventId | None, limit: int) -> list[Delivery]:
        pipe = self.client.pipeline(transaction=True)
        end = "(" + format_event_id(before) if before is not None else "+"
        for channel in channels:
            pipe.xrevrange(self.names.history_key(channel), max=end, min="-", count=limit)
        streams = [[_delivery(entry) for entry in reversed(result)] for result in pipe.execute()]
        return list(reversed(merge_by_id(streams)))[:limit]


def text(value: Any) -> str:
    """A reply value as str (redis-py gives bytes without decode_responses)."""
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _horizon(info: Any) -> EventId | None:
    """From XINFO STREAM: the oldest kept id if the stream was ever trimmed."""
    if not isinstance(info, dict):
        return None
    added, length, first = info.get("entries-added"), info.get("length"), info.get("first-entry")
    if added is None or length is None or int(added) <= int(length):
        return None
    if first:
        return parse_event_id(text(first[0]))
    return (2**62, 0)  # everything trimmed (by age): any resume point is suspect


def _delivery(entry: Any) -> Delivery:
    _entry_id, fields = entry
    payload = fields.get(b"d") if b"d" in fields else fields.get("d")
    return delivery_from_payload(text(payload))
