"""Channel and key names: the only place that knows how they are spelled.

A channel is what a subscriber listens to and what a publish targets. The
same name is the Redis pub/sub channel; its history lives in a Redis Stream
under ``<prefix>history:<suffix>``.

On a Redis Cluster (``hash_tags=True``) the suffix is wrapped in a hash tag,
``<prefix>{user:alice}``, and so are the channel's history stream and its id
sequence (``<prefix>history:{user:alice}``, ``<prefix>seq:{user:alice}``):
all three hash to one slot, so one script can write them and SPUBLISH the
event on the shard that serves it.
"""

from __future__ import annotations

from .events import Target

BROADCAST_SUFFIX = "broadcast"


class ChannelNames:
    def __init__(self, prefix: str = "notifier:", hash_tags: bool = False):
        self.prefix = prefix
        self.hash_tags = hash_tags

    def _name(self, suffix: str) -> str:
        return self.prefix + ("{" + suffix + "}" if self.hash_tags else suffix)

    def for_target(self, target: Target) -> str:
        return self._name(target.channel_suffix())

    def user(self, user_id: str) -> str:
        return self._name(f"user:{user_id}")

    def topic(self, topic: str) -> str:
        return self._name(f"topic:{topic}")

    @property
    def broadcast(self) -> str:
        return self._name(BROADCAST_SUFFIX)

    def probe(self, node_id: str) -> str:
        return self._name(f"probe:{node_id}")

    def history_key(self, channel: str) -> str:
        return f"{self.prefix}history:{channel[len(self.prefix):]}"

    def stream_leases_key(self, user_id: str) -> str:
        """The sorted set of a user's open streams (``redis_leases.py``)."""
        return f"{self.prefix}streams:{user_id}"

    def channel_sequence_key(self, channel: str) -> str:
        """A Cluster channel's own id sequence, in the channel's slot."""
        return f"{self.prefix}seq:{channel[len(self.prefix):]}"

    @property
    def sequence_key(self) -> str:
        return f"{self.prefix}sequence"

    def for_subscriber(self, user_id: str, topics: list[str]) -> list[str]:
        """Every user gets their private channel and the broadcast channel."""
        return [self.user(user_id), self.broadcast] + [self.topic(t) for t in topics]
