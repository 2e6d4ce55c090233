"""Redis history: one Redis Stream per channel, written by the publish
script (``redis_store.py``), read here for replay, recent pages and the
catch-up after a subscriber reconnect.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import redis

from ..channels import ChannelNames
from ..envelope import decode
from ..events import Delivery, EventId, format_event_id, parse_event_id
from . import Replay, merge_by_id
from .redis_store import text

CHUNK = 500  # channels per round trip when catching up


class RedisHistory:
    """``History`` and ``CatchUp`` over the channels' streams."""

    def __init__(self, client: redis.Redis, names: ChannelNames, history_max_age_seconds: float = 86400,
                 replay_max_events: int = 1000):
        self.client = client
        self.names = names
        self.history_max_age_ms = int(history_max_age_seconds * 1000)
        self.replay_max_events = replay_max_events

    def last_id(self, channels: Sequence[str] = ()) -> EventId:  # one sequence for all channels
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
            streams, _info, _last, _since = self.read_after(chunk, after, upto=upto)
            for channel, stream in zip(chunk, streams):
                found.extend((channel, delivery) for delivery in stream)
        # Global id order, so each subscription sees its ids ascending.
        found.sort(key=lambda pair: pair[1].id)
        return found


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
    return decode(text(payload))
