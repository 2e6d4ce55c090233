"""One shard's sharded pub/sub session on a Redis Cluster: ``redis_session``
with SSUBSCRIBE per slot, its own probe channel in one of the shard's slots,
and the signs that a channel moved away (``redis_cluster.py`` replans)."""

from __future__ import annotations

from typing import Any

import redis
from redis.crc import key_slot

from . import BrokerListener
from .redis_session import Session, SessionSettings
from .redis_wanted import Wanted


class SlotMoved(Exception):
    """A channel of this connection is now served elsewhere (or the connection must be remade)."""


class ShardWanted(Wanted):
    """``Wanted`` for one shard, plus the channels that moved in from another
    shard and must be caught up once confirmed here."""

    def __init__(self, always: set[str]):
        super().__init__(always)
        self.moved_in: set[str] = set()
        self.stale = False  # channels moved away: remake the connection

    def drop(self, channel: str) -> None:
        super().drop(channel)
        self.moved_in.discard(channel)


class ShardSession(Session):
    MESSAGE = "smessage"
    SUBSCRIBED = "ssubscribe"

    def __init__(self, node_client: redis.Redis, wanted: ShardWanted, listener: BrokerListener, probe_channel: str,
                 settings: SessionSettings):
        super().__init__(node_client, wanted, listener, probe_channel, settings)
        self.shard_wanted = wanted

    def _caught_up(self) -> None:
        self.shard_wanted.moved_in.clear()  # this catch-up covers them too
        self.listener.resubscribed(sorted(self.wanted.channels - self.wanted.always))

    def _confirmed(self, channel: str) -> None:
        if self.live and channel in self.shard_wanted.moved_in:
            # Here, before the next message on this connection: the catch-up
            # comes before anything newer on this channel.
            self.shard_wanted.moved_in.discard(channel)
            self.listener.resubscribed([channel])

    def _other(self, kind: Any, channel: str) -> None:
        if kind == "sunsubscribe" and channel in self._requested:
            # Not asked for: the server dropped it because its slot moved.
            raise SlotMoved(f"{channel} left this shard")

    def _sync(self, candidates: set[str]) -> None:
        if self.shard_wanted.stale:
            raise SlotMoved("channels moved to another shard")
        super()._sync(candidates)

    def _subscribe(self, channels: list[str]) -> None:
        for group in by_slot(channels):
            self.pubsub.ssubscribe(*group)

    def _unsubscribe(self, channels: list[str]) -> None:
        for group in by_slot(channels):
            self.pubsub.sunsubscribe(*group)

    def _send_probe(self) -> int:
        try:
            return int(self.client.execute_command("SPUBLISH", self.probe_channel, b"probe"))
        except redis.exceptions.MovedError:
            raise SlotMoved("the probe's slot moved") from None


def by_slot(channels: list[str]) -> list[list[str]]:
    groups: dict[int, list[str]] = {}
    for channel in channels:
        groups.setdefault(key_slot(channel.encode("utf-8")), []).append(channel)
    return list(groups.values())
