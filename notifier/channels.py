"""Channel and key names: the only place that knows how they are spelled.

A channel is what a subscriber listens to and what a publish targets. The
same name is the Redis pub/sub channel; its history lives in a Redis Stream
under ``<prefix>history:<suffix>``.
"""

from __future__ import annotations

from .events import Target

BROADCAST_SUFFIX = "broadcast"


class ChannelNames:
    def __init__(self, prefix: str = "notifier:"):
        self.prefix = prefix

    def for_target(self, target: Target) -> str:
        return self.prefix + target.channel_suffix()

    def user(self, user_id: str) -> str:
        return f"{self.prefix}user:{user_id}"

    def topic(self, topic: str) -> str:
        return f"{self.prefix}topic:{topic}"

    @property
    def broadcast(self) -> str:
        return self.prefix + BROADCAST_SUFFIX

    def probe(self, node_id: str) -> str:
        return f"{self.prefix}probe:{node_id}"

    def history_key(self, channel: str) -> str:
        return f"{self.prefix}history:{channel[len(self.prefix):]}"

    def stream_leases_key(self, user_id: str) -> str:
        """The sorted set of a user's open streams (``redis_leases.py``)."""
        return f"{self.prefix}streams:{user_id}"

    @property
    def sequence_key(self) -> str:
        return f"{self.prefix}sequence"

    def for_subscriber(self, user_id: str, topics: list[str]) -> list[str]:
        """Every user gets their private channel and the broadcast channel."""
        return [self.user(user_id), self.broadcast] + [self.topic(t) for t in topics]
