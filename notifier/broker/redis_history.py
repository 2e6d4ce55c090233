"""Redis history: one Redis Stream per channel, written by the publish
script (``redis_store.py``), read here for replay, recent pages and the
catch-up after a subscriber reconnect.

Nothing here reads more than it will hand out: a replay first measures what
it would send (inside Redis, ``SURVEY_SCRIPT``) and answers ``too_many``
without reading a payload when that is over the bounds; a page of recent
events is read a few events at a time.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import redis
from redis.exceptions import ClusterDownError, RedisClusterException

from ..channels import ChannelNames
from ..envelope import decode
from ..errors import BrokerUnavailable
from ..events import ZERO_ID, Delivery, EventId, format_event_id, parse_event_id
from . import Page, Replay, fill_page, merge_by_id
from .redis_store import text

log = logging.getLogger("notifier.broker.redis")

CHUNK = 500  # channels per round trip when catching up
RECENT_PAGE = 25  # events per channel per round trip for a page of recent events
SURVEY_PAGE = 50  # events per XRANGE inside the survey script

# How many events (and how many payload bytes) a replay would send, without
# sending any: it stops counting once either is over its bound. Returns
# {over, count, bytes, ms, seq, since} (the sequence as the publish script
# left it: the snapshot the replay then reads up to).
SURVEY_SCRIPT = """
local max_events = tonumber(ARGV[2])
local max_bytes = tonumber(ARGV[3])
local page = tonumber(ARGV[4])
local count, bytes, over = 0, 0, 0
for i = 1, #KEYS - 1 do
  local start = ARGV[1]
  while true do
    local entries = redis.call('XRANGE', KEYS[i], start, '+', 'COUNT', page)
    for _, entry in ipairs(entries) do
      count = count + 1
      local fields = entry[2]
      for j = 2, #fields, 2 do bytes = bytes + #fields[j] end
      if count > max_events or bytes > max_bytes then over = 1; break end
    end
    if over == 1 or #entries < page then break end
    start = '(' .. entries[#entries][1]
  end
  if over == 1 then break end
end
local seq = redis.call('HMGET', KEYS[#KEYS], 'ms', 'seq', 'since')
return {over, count, bytes, seq[1], seq[2], seq[3]}
"""


@dataclass(frozen=True)
class Survey:
    over: bool
    last: EventId
    since: EventId | None  # the first id of the current history, when recorded


@contextmanager
def outage_is_unavailable() -> Iterator[None]:
    """Redis unreachable (or loading, or timing out) is a 503 for the client;
    any other Redis error is a bug of ours and stays one."""
    try:
        yield
    # A Cluster none of whose nodes answers raises RedisClusterException, which is not a RedisError.
    except (redis.ConnectionError, redis.TimeoutError, ClusterDownError, RedisClusterException) as exc:
        log.warning("history read failed: %s", exc.__class__.__name__)
        raise BrokerUnavailable() from None


class RedisHistory:
    """``History`` and ``CatchUp`` over the channels' streams."""

    def __init__(self, client: redis.Redis, names: ChannelNames, history_max_age_seconds: float = 86400,
                 replay_max_events: int = 1000, replay_max_bytes: int = 8 * 1024 * 1024,
                 on_undecodable: Callable[[], None] | None = None):
        self.client = client
        self.names = names
        self.history_max_age_ms = int(history_max_age_seconds * 1000)
        self.replay_max_events = replay_max_events
        self.replay_max_bytes = replay_max_bytes
        self.on_undecodable = on_undecodable or (lambda: None)
        self._survey_script = client.register_script(SURVEY_SCRIPT)

    def last_id(self, channels: Sequence[str] = ()) -> EventId:  # one sequence for all channels
        with outage_is_unavailable():
            ms, seq = self.client.hmget(self.names.sequence_key, "ms", "seq")
        if ms is None or seq is None:
            return (0, 0)
        return int(ms), int(seq)

    def read_after(self, channels: Sequence[str], after: EventId, upto: EventId) -> list[list[Delivery]]:
        """One MULTI/EXEC snapshot: for each channel the events with
        ``after < id <= upto``. Precondition: their number is bounded (a
        survey, or a catch-up's short window).

        A snapshot matters: read channel by channel and an event published in
        between on an already-read channel would be skipped for good.
        """
        pipe = self.client.pipeline(transaction=True)
        for channel in channels:
            pipe.xrange(self.names.history_key(channel), min="(" + format_event_id(after), max=format_event_id(upto))
        with outage_is_unavailable():
            results = pipe.execute()
        return [self._deliveries(result) for result in results]

    def _deliveries(self, entries: Sequence[Any]) -> list[Delivery]:
        found = []
        for entry in entries:
            delivery = self._delivery(entry)
            if delivery is not None:
                found.append(delivery)
        return found

    def _delivery(self, entry: Any) -> Delivery | None:
        return entry_delivery(entry, self.on_undecodable)

    def survey(self, channels: Sequence[str], after: EventId) -> Survey:
        keys = [self.names.history_key(channel) for channel in channels] + [self.names.sequence_key]
        args: list[str | int] = ["(" + format_event_id(after), self.replay_max_events, self.replay_max_bytes, SURVEY_PAGE]
        with outage_is_unavailable():
            over, _count, _bytes, ms, seq, since = self._survey_script(keys=keys, args=args)
        last = (int(ms), int(seq)) if ms is not None and seq is not None else ZERO_ID
        return Survey(bool(over), last, parse_event_id(text(since)) if since is not None else None)

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
        with outage_is_unavailable():
            return [_horizon(info) for info in pipe.execute(raise_on_error=False)]

    def _trim_horizons(self, channels: Sequence[str]) -> list[EventId]:
        return [horizon for horizon in self._horizons(channels) if horizon is not None]

    def gaps(self, channels: Sequence[str], after: EventId) -> list[str]:
        """The channels whose history no longer reaches back to ``after``
        (same conservative rule as replay): a reader at ``after`` may have
        missed trimmed events on them."""
        lagged: list[str] = []
        for start in range(0, len(channels), CHUNK):
            chunk = channels[start:start + CHUNK]
            lagged.extend(channel for channel, horizon in zip(chunk, self._horizons(chunk))
                          if horizon is not None and horizon > after)
        return lagged

    def between(self, channels: Sequence[str], after: EventId, upto: EventId) -> list[tuple[str, Delivery]]:
        """Read in chunks, each only up to ``upto``: the chunks agree with each
        other without one giant MULTI."""
        found: list[tuple[str, Delivery]] = []
        for start in range(0, len(channels), CHUNK):
            chunk = list(channels[start:start + CHUNK])
            streams = self.read_after(chunk, after, upto)
            for channel, stream in zip(chunk, streams):
                found.extend((channel, delivery) for delivery in stream)
        # Global id order, so each subscription sees its ids ascending.
        found.sort(key=lambda pair: pair[1].id)
        return found


    def replay(self, channels: Sequence[str], after: EventId) -> Replay:
        survey = self.survey(channels, after)
        if after > survey.last:
            return Replay(reset=True, reason="unknown_id")
        if survey.since is not None and after < survey.since:
            # The history (and the sequence) began after this id: Redis lost
            # its data (a restart without persistence). What the client missed
            # before that is gone; say so rather than replay only what followed.
            return Replay(reset=True, reason="history_lost")
        if after[0] < int(time.time() * 1000) - self.history_max_age_ms:
            return Replay(reset=True, reason="too_old")
        events = [] if survey.over else merge_by_id(self.read_after(channels, after, survey.last))
        # After the read: a trim that raced it is seen here, and resets.
        if any(horizon > after for horizon in self._trim_horizons(channels)):
            return Replay(reset=True, reason="too_old")
        if survey.over:
            return Replay(reset=True, reason="too_many")
        return Replay(events)

    def recent(self, channels: Sequence[str], before: EventId | None, limit: int,
               max_bytes: int | None = None) -> Page:
        if before is not None and before <= ZERO_ID:
            return Page()  # nothing is older than the first id (and Redis refuses "(0-0" as an end)
        end = "(" + format_event_id(before) if before is not None else "+"
        newest_first = heapq.merge(*(self._newest(channel, end, limit) for channel in channels),
                                   key=lambda delivery: delivery.id, reverse=True)
        with outage_is_unavailable():
            return fill_page(newest_first, limit, max_bytes)

    def _newest(self, channel: str, end: str, limit: int) -> Iterator[Delivery]:
        return newest(self.client, self.names.history_key(channel), end, limit, self._deliveries)


def entry_delivery(entry: Any, on_undecodable: Callable[[], None]) -> Delivery | None:
    """One stored entry, or None (counted) when it is not an envelope:
    written by something else, or damaged. One bad entry must not make a
    channel's history unreadable."""
    try:
        _entry_id, fields = entry
        payload = fields.get(b"d") if b"d" in fields else fields.get("d")
        return decode(text(payload))
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        on_undecodable()
        return None


def newest(client: Any, key: str, end: str, limit: int,
           deliveries: Callable[[Sequence[Any]], list[Delivery]]) -> Iterator[Delivery]:
    """One stream's events from ``end`` down, read a few at a time."""
    count = min(limit + 1, RECENT_PAGE)
    while True:
        entries: Any = client.xrevrange(key, max=end, min="-", count=count)
        yield from deliveries(entries)
        if len(entries) < count:
            return
        end = "(" + text(entries[-1][0])


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

