"""Publishing to a Redis Cluster: the single-Redis script (``redis_store.py``)
with one change forced by the cluster, the id sequence.

A script may only touch keys of one hash slot, so there is no sequence shared
by all channels. Each channel has its own (``<prefix>seq:{user:alice}``, in
the channel's slot beside its history stream): ids stay ``<ms>-<seq>``, unique
and increasing per channel, with ``ms`` from the clock of the shard serving
the channel. Across channels they are only as ordered as the shards' clocks
(docs/delivery.md says what that means for a resume).

A batch is grouped by slot; each group is one script on its shard, atomic
there. A batch over several slots is therefore not atomic as a whole: when
one group fails the API answers 503, and the groups already stored stay
stored (the publisher's retry stores them again under new ids).

MOVED (the slot has a new owner), ASK and TRYAGAIN (the slot is migrating)
mean the script did not run: the store follows the redirection and tries
again, a few times, within the socket timeout.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import partial
from typing import Any

import gevent
import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import AskError, MovedError, TryAgainError

from ..channels import ChannelNames
from ..envelope import LUA_SPLICE, body_without_id
from ..events import Notification, Published
from ..runtime.redis import cluster_slot_owner, refresh_slot_map
from .redis_script import ScriptRunner
from .redis_store import LUA_PUBLISH_PRELUDE, replica_timeout_ms, text

CLUSTER_PUBLISH_SCRIPT = LUA_PUBLISH_PRELUDE + """
local out = {}
for i = 1, #KEYS, 2 do
  local last = redis.call('HMGET', KEYS[i], 'ms', 'seq')
  local ms = tonumber(last[1]) or 0
  local seq = tonumber(last[2]) or -1
  if now > ms then ms = now; seq = 0 else seq = seq + 1 end
  local id = string.format('%d-%d', ms, seq)
  local channel = ARGV[3 + i]
  local body = ARGV[4 + i]
  local payload = """ + LUA_SPLICE + """
  keep(KEYS[i + 1], id, payload)
  redis.call('HSET', KEYS[i], 'ms', ms, 'seq', seq)
  redis.call('PEXPIRE', KEYS[i], max_age_ms)
  out[#out + 1] = id
  out[#out + 1] = redis.call('SPUBLISH', channel, payload)
end
return out
"""

REDIRECTS = 5  # MOVED / ASK / TRYAGAIN followed per group before giving up


class ClusterStore:
    """Runs the cluster publish script on the shard of each slot; ``close``
    releases the connections."""

    def __init__(self, cluster: RedisCluster, names: ChannelNames, history_max_events: int = 1000,
                 history_max_age_seconds: float = 86400, min_replicas: int = 0):
        self.cluster = cluster
        self.names = names
        self.history_max_events = history_max_events
        self.history_max_age_ms = int(history_max_age_seconds * 1000)
        self.min_replicas = min_replicas
        self.socket_timeout = float(cluster.get_connection_kwargs().get("socket_timeout") or 5.0)
        self._stale_after_ms = self.socket_timeout * 500
        self._runners: dict[str, ScriptRunner] = {}
        self._offsets: dict[str, tuple[float, float]] = {}  # node -> (Redis TIME minus ours in ms, measured at)

    # -- routing -------------------------------------------------------------------

    def slot_of(self, channel: str) -> int:
        return key_slot(channel.encode("utf-8"))

    def owner(self, slot: int) -> Any:
        return cluster_slot_owner(self.cluster, slot)

    def runner(self, node: Any) -> ScriptRunner:
        runner = self._runners.get(node.name)
        if runner is None:
            pool = self.cluster.get_redis_connection(node).connection_pool
            runner = self._runners[node.name] = ScriptRunner(
                pool, CLUSTER_PUBLISH_SCRIPT, 64, self.socket_timeout, self.min_replicas,
                replica_timeout_ms(self.socket_timeout))
        return runner

    def refresh(self) -> None:
        """Read the slot map again (after MOVED, or when asked by the broker)."""
        refresh_slot_map(self.cluster)

    # -- publishing ----------------------------------------------------------------

    def publish(self, notifications: Sequence[Notification]) -> list[Published]:
        """Raises redis.RedisError on failure (see the module docstring for a
        batch over several slots)."""
        groups: dict[int, list[int]] = {}
        channels = [self.names.for_target(n.target) for n in notifications]
        for index, channel in enumerate(channels):
            groups.setdefault(self.slot_of(channel), []).append(index)
        results: list[Published | None] = [None] * len(notifications)
        for slot, indexes in groups.items():
            keys: list[str] = []
            args: list[Any] = []
            for index in indexes:
                keys += [self.names.channel_sequence_key(channels[index]), self.names.history_key(channels[index])]
                args += [channels[index], body_without_id(notifications[index])]
            reply = self._run(slot, keys, args)
            for position, index in enumerate(indexes):
                results[index] = Published(text(reply[2 * position]), notifications[index],
                                           int(reply[2 * position + 1]))
        return [published for published in results if published is not None]

    def _run(self, slot: int, keys: list[str], args: list[Any]) -> Any:
        node = self.owner(slot)
        asking = False
        for attempt in range(REDIRECTS + 1):
            runner = self.runner(node)
            try:
                return runner(keys, args, head=partial(self._head, node), asking=asking)
            except MovedError as exc:
                self.refresh()
                node = self._node_at(exc.host, exc.port) or self.owner(slot)
                asking = False
            except AskError as exc:
                node = self._node_at(exc.host, exc.port) or self.owner(slot)
                asking = True
            except TryAgainError:
                gevent.sleep(0.01 * (attempt + 1))
            except redis.ResponseError as exc:
                if str(exc).startswith("STALE"):
                    self._offsets.pop(node.name, None)  # measure this shard's clock again
                raise
            except (redis.ConnectionError, redis.TimeoutError):
                # The shard's master may be failing over: let the next publish see the new map.
                self._refresh_quietly()
                raise
        raise redis.ConnectionError(f"slot {slot} kept moving; try again")

    def _node_at(self, host: str, port: int) -> Any:
        return self.cluster.get_node(host=host, port=port) or self.cluster.get_node(node_name=f"{host}:{port}")

    def _refresh_quietly(self) -> None:
        try:
            self.refresh()
        except redis.RedisError:
            pass

    def _head(self, node: Any) -> tuple[int, int, int]:
        return self.history_max_events, self.history_max_age_ms, self._deadline_ms(node)

    def _deadline_ms(self, node: Any) -> int:
        """As RedisStore._deadline_ms, with each shard's clock measured on its own."""
        now = time.monotonic()
        offset, measured = self._offsets.get(node.name, (0.0, -1e9))
        if now - measured > 30.0:
            before = time.monotonic()
            seconds, micros = self.cluster.get_redis_connection(node).time()
            after = time.monotonic()
            offset = seconds * 1000 + micros / 1000 - (before + after) * 500
            self._offsets[node.name] = (offset, after)
            now = after
        return int(now * 1000 + offset + self._stale_after_ms)

    def close(self) -> None:
        for runner in self._runners.values():
            runner.disconnect()
        self.cluster.close()
