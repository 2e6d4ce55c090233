"""History on a Redis Cluster: each channel's stream and id sequence live in
the channel's slot, so every read is per channel, pipelined by redis-py's
cluster pipeline (one batch per shard, never a command over several slots).

Ids are increasing per channel only (``redis_cluster_store.py``). A resume
point (``Last-Event-ID``) is the id of the last event a stream sent, from
whichever channel; an event of another channel with a lower id may still
have been on its way (the shards' clocks differ a little, and each shard's
pub/sub runs on its own connection). So a replay reads each channel from
``reorder_ms`` before the resume point: nothing is skipped, and what the
client may already have from that window comes again (docs/delivery.md).
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Sequence
from typing import Any

from redis.cluster import RedisCluster

from ..channels import ChannelNames
from ..events import ZERO_ID, Delivery, EventId, format_event_id
from . import Page, Replay, fill_page
from .redis_history import SURVEY_PAGE, SURVEY_SCRIPT, _horizon, entry_delivery, newest, outage_is_unavailable


class ClusterHistory:
    """``History`` and ``ChannelCatchUp`` over the channels' streams."""

    per_channel = True  # ids are ordered per channel only

    def __init__(self, cluster: RedisCluster, names: ChannelNames, history_max_age_seconds: float = 86400,
                 replay_max_events: int = 1000, reorder_ms: int = 2000, replay_max_bytes: int = 8 * 1024 * 1024,
                 on_undecodable: Callable[[], None] | None = None):
        self.cluster = cluster
        self.names = names
        self.history_max_age_ms = int(history_max_age_seconds * 1000)
        self.replay_max_events = replay_max_events
        self.replay_max_bytes = replay_max_bytes
        self.reorder_ms = reorder_ms
        self.on_undecodable = on_undecodable or (lambda: None)
        self._survey_script = cluster.register_script(SURVEY_SCRIPT)

    def _deliveries(self, entries: Sequence[Any]) -> list[Delivery]:
        found = (entry_delivery(entry, self.on_undecodable) for entry in entries)
        return [delivery for delivery in found if delivery is not None]

    def _over_bounds(self, channels: Sequence[str], start: EventId) -> bool:
        """Whether a replay from ``start`` would send more events or bytes
        than its bounds allow, counted inside Redis, channel by channel (each
        in its own slot), without reading a payload here."""
        count = size = 0
        for channel in channels:
            keys = [self.names.history_key(channel), self.names.channel_sequence_key(channel)]
            args: list[str | int] = ["(" + format_event_id(start), self.replay_max_events - count,
                                     self.replay_max_bytes - size, SURVEY_PAGE]
            over, found, found_bytes, *_sequence = self._survey_script(keys=keys, args=args)
            count, size = count + int(found), size + int(found_bytes)
            if int(over):
                return True
        return False

    def window_start(self, after: EventId) -> EventId:
        """Where a replay from ``after`` starts reading each channel."""
        return (max(0, after[0] - self.reorder_ms), 0) if self.reorder_ms else after

    def last_ids(self, channels: Sequence[str]) -> dict[str, EventId]:
        pipe = self.cluster.pipeline(transaction=False)
        for channel in channels:
            pipe.hmget(self.names.channel_sequence_key(channel), "ms", "seq")
        return {channel: _id(ms, seq) for channel, (ms, seq) in zip(channels, pipe.execute())}

    def last_id(self, channels: Sequence[str] = ()) -> EventId:
        return max(self.last_ids(channels).values(), default=ZERO_ID)

    def replay(self, channels: Sequence[str], after: EventId) -> Replay:
        with outage_is_unavailable():
            return self._replay(channels, after)

    def _replay(self, channels: Sequence[str], after: EventId) -> Replay:
        start = self.window_start(after)
        if self._over_bounds(channels, start):
            return Replay(reset=True, reason="too_many", positions=self.last_ids(channels))
        pipe = self.cluster.pipeline(transaction=False)
        for channel in channels:
            key = self.names.history_key(channel)
            pipe.xrange(key, min="(" + format_event_id(start), max="+", count=self.replay_max_events + 1)
            pipe.xinfo_stream(key)
            pipe.hmget(self.names.channel_sequence_key(channel), "ms", "seq")
        results = pipe.execute(raise_on_error=False)
        streams: dict[str, list[Delivery]] = {}
        lasts: dict[str, EventId] = {}
        horizons: list[EventId] = []
        for index, channel in enumerate(channels):
            entries, info, (ms, seq) = results[3 * index:3 * index + 3]
            if isinstance(entries, Exception):
                raise entries
            streams[channel] = self._deliveries(entries)
            lasts[channel] = _id(ms, seq)
            horizon = _horizon(info)
            if horizon is not None:
                horizons.append(horizon)
        reset = self._reset_reason(after, start, streams, lasts, horizons)
        if reset:
            return Replay(reset=True, reason=reset, positions=lasts)
        positions = {channel: max(start, *(d.id for d in stream[-1:])) for channel, stream in streams.items()}
        events = sorted((d for stream in streams.values() for d in stream), key=lambda d: d.id)
        return Replay(events, positions=positions)

    def _reset_reason(self, after: EventId, start: EventId, streams: dict[str, list[Delivery]],
                      lasts: dict[str, EventId], horizons: list[EventId]) -> str:
        if after > max(lasts.values(), default=ZERO_ID):
            return "unknown_id"
        if after[0] < int(time.time() * 1000) - self.history_max_age_ms:
            return "too_old"
        if any(horizon > start for horizon in horizons):
            return "too_old"
        if sum(len(stream) for stream in streams.values()) > self.replay_max_events:
            return "too_many"
        return ""

    def recent(self, channels: Sequence[str], before: EventId | None, limit: int,
               max_bytes: int | None = None) -> Page:
        if before is not None and before <= ZERO_ID:
            return Page()
        end = "(" + format_event_id(before) if before is not None else "+"
        newest_first = heapq.merge(
            *(newest(self.cluster, self.names.history_key(channel), end, limit, self._deliveries) for channel in channels),
            key=lambda delivery: delivery.id, reverse=True)
        with outage_is_unavailable():
            return fill_page(newest_first, limit, max_bytes)

    # -- ChannelCatchUp ------------------------------------------------------------

    def since(self, afters: dict[str, EventId]) -> tuple[list[tuple[str, Delivery]], list[str]]:
        """Every kept event of each channel after its own point, in id order
        per channel, and the channels whose history no longer reaches back to
        their point (trimmed: what is missing cannot be caught up)."""
        channels = list(afters)
        pipe = self.cluster.pipeline(transaction=False)
        for channel in channels:
            key = self.names.history_key(channel)
            pipe.xrange(key, min="(" + format_event_id(afters[channel]), max="+")
            pipe.xinfo_stream(key)
        results = pipe.execute(raise_on_error=False)
        found: list[tuple[str, Delivery]] = []
        gaps: list[str] = []
        for index, channel in enumerate(channels):
            entries, info = results[2 * index], results[2 * index + 1]
            if isinstance(entries, Exception):
                raise entries
            found.extend((channel, delivery) for delivery in self._deliveries(entries))
            horizon = _horizon(info)
            if horizon is not None and horizon > afters[channel]:
                gaps.append(channel)
        found.sort(key=lambda pair: pair[1].id)  # stable: each channel stays in its own order
        return found, gaps


def _id(ms: Any, seq: Any) -> EventId:
    return (int(ms), int(seq)) if ms is not None and seq is not None else ZERO_ID
