"""The Redis Cluster broker: one sharded pub/sub connection per shard that
serves a channel this worker's clients need, each owned by one greenlet.

- A channel (hash-tagged, ``channels.py``) lives in one slot; the slot map
  (redis-py's ``RedisCluster``) says which master serves it. ``subscribe``
  routes each channel to its shard, starting that shard's connection when it
  is the first channel there, and waits for SSUBSCRIBE's confirmation;
  ``unsubscribe`` releases it, and a shard left with nothing to carry is
  closed. The broadcast channel is always wanted, so its shard always runs.
- SSUBSCRIBE / SUNSUBSCRIBE are sent one slot at a time: one command over
  several slots is refused (CROSSSLOT) even when one node serves them all.
- Each shard is probed on its own (SPUBLISH to a probe channel in one of its
  slots, which must come back on its connection).
- The cluster changes under us. A slot that migrates makes its old owner push
  ``sunsubscribe``; a failed master drops the connection; a probe or publish
  meets MOVED; and a replica moved to another master may change nothing we
  can see (redis/redis#12558), so the slot map is also read again every
  ``topology_interval`` seconds. Each of these replans: every wanted channel
  whose slot has a new owner moves to that shard, is SSUBSCRIBEd there, and
  once confirmed is caught up from history (the core's ``resubscribed`` for
  exactly those channels) before anything newer is read from that connection.
  The shard it left restarts its connection (and catches up its channels).

Why not redis-py's ``ClusterPubSub``: in 8.1 it reconciles a moved slot on a
thread of its own after a slot-map refresh (and only then: a ``sunsubscribe``
push alone changes nothing), with no hook to catch up what was published
while the channel was between nodes, and reads its connections by polling each
in turn. Here each shard's connection has one owner greenlet that waits on its
socket, as on one Redis (``redis_session.py``).
"""

from __future__ import annotations

import logging
import os
import random
import socket
import time
import uuid

import gevent
import redis
from gevent.lock import Semaphore
from redis.crc import key_slot
from redis.exceptions import RedisClusterException

from ..channels import ChannelNames
from ..errors import BrokerUnavailable
from ..events import Notification, Published
from . import BrokerListener, Health, ShardHealth
from .redis import BACKOFF_BASE, BACKOFF_MAX, SUBSCRIBE_TIMEOUT
from .redis_cluster_session import ShardSession, ShardWanted, SlotMoved
from .redis_cluster_store import ClusterStore
from .redis_session import ProbeFailed, Session, SessionSettings
from .redis_store import publish_or_unavailable

log = logging.getLogger("notifier.broker.redis")

TOPOLOGY_INTERVAL = 5.0
# What reading the slot map or a shard may raise (RedisClusterException is not a RedisError).
CLUSTER_ERRORS = (redis.RedisError, RedisClusterException, IndexError, KeyError)


class Shard:
    """One master's connection: what it must carry, its owner greenlet, its state."""

    def __init__(self, node_name: str, probe_channel: str):
        self.node_name = node_name
        self.probe_channel = probe_channel
        self.wanted = ShardWanted({probe_channel})
        self.session: ShardSession | None = None
        self.greenlet: gevent.Greenlet | None = None
        self.last_alive = 0.0
        self.why_not = "starting"
        self.retired = False

    @property
    def carries(self) -> set[str]:
        return self.wanted.channels - self.wanted.always

    @property
    def live(self) -> bool:
        return self.session is not None and self.session.live

    def health(self) -> ShardHealth:
        alive = max(self.last_alive, self.session.last_alive if self.session is not None else 0.0)
        return ShardHealth(self.node_name, self.live, alive)


class ClusterBroker:
    def __init__(self, names: ChannelNames, store: ClusterStore, settings: SessionSettings,
                 subscribe_timeout: float = SUBSCRIBE_TIMEOUT, topology_interval: float = TOPOLOGY_INTERVAL):
        self.names = names
        self.store = store
        self.cluster = store.cluster
        self.settings = settings
        self.subscribe_timeout = subscribe_timeout
        self.topology_interval = topology_interval
        self.node_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.always = {names.broadcast}
        self.route: dict[str, str] = {}  # wanted channel -> node name of its shard
        self.shards: dict[str, Shard] = {}
        self.reconnects = 0
        self._listener: BrokerListener | None = None
        self._monitor: gevent.Greenlet | None = None
        self._replanning = Semaphore()
        self._stopping = False
        self._started = False

    # -- the Broker protocol ---------------------------------------------------

    def start(self, listener: BrokerListener) -> None:
        if self._started:
            return
        self._started = True
        self._listener = listener
        try:
            self._add(sorted(self.always))
        except BrokerUnavailable:
            log.warning("cluster slot map not readable yet; the monitor will retry")
        self._monitor = gevent.spawn(self._watch_topology)
        log.info("redis cluster broker started (node %s)", self.node_id)

    def stop(self) -> None:
        self._stopping = True
        greenlets = [shard.greenlet for shard in self.shards.values() if shard.greenlet is not None]
        if self._monitor is not None:
            greenlets.append(self._monitor)
        gevent.killall(greenlets, block=True, timeout=2)
        for shard in self.shards.values():
            shard.wanted.close()
        self.shards.clear()
        self.store.close()

    def subscribe(self, channels: list[str]) -> None:
        touched = self._add(channels)
        deadline = time.monotonic() + self.subscribe_timeout
        for shard, wanted_here in touched:
            shard.wanted.wait_confirmed(wanted_here, deadline - time.monotonic())

    def unsubscribe(self, channels: list[str]) -> None:
        for channel in channels:
            if channel in self.always:
                continue
            node_name = self.route.pop(channel, None)
            shard = self.shards.get(node_name) if node_name else None
            if shard is None:
                continue
            shard.wanted.drop(channel)
            shard.wanted.wake()
            if not shard.carries:
                self._retire(shard)

    def publish(self, notifications: list[Notification]) -> list[Published]:
        return publish_or_unavailable(self.store, notifications)

    def health(self) -> Health:
        if self._stopping:
            return Health(False, "stopping", "redis-cluster", self.reconnects)
        needed = [self.shards[name] for name in set(self.route.values()) if name in self.shards]
        shards = tuple(shard.health() for shard in needed)
        alive = min((s.last_alive for s in shards), default=0.0)
        down = [shard for shard in needed if not shard.live]
        if not needed or len(needed) < len(set(self.route.values())):
            return Health(False, "no shard serves the broadcast channel yet", "redis-cluster", self.reconnects,
                          alive, shards)
        if down:
            why = "; ".join(f"{shard.node_name}: {shard.why_not}" for shard in down)
            return Health(False, "subscriber down: " + why, "redis-cluster", self.reconnects, alive, shards)
        return Health(True, "ok", "redis-cluster", self.reconnects, alive, shards)

    # -- routing ---------------------------------------------------------------

    def _owner(self, channel: str) -> str:
        try:
            node = self.store.owner(key_slot(channel.encode("utf-8")))
        except CLUSTER_ERRORS as exc:
            raise BrokerUnavailable(f"no shard serves {channel!r}: {exc.__class__.__name__}") from None
        if node is None:
            raise BrokerUnavailable(f"no shard serves {channel!r}")
        return str(node.name)

    def _add(self, channels: list[str]) -> list[tuple[Shard, list[str]]]:
        """Route ``channels`` to their shards' wanted sets; returns them per shard."""
        touched: dict[str, list[str]] = {}
        for channel in channels:
            node_name = self.route.get(channel) or self._owner(channel)
            self.route[channel] = node_name
            touched.setdefault(node_name, []).append(channel)
        result = []
        for node_name, here in touched.items():
            shard = self._shard(node_name)
            shard.wanted.want(here)
            shard.wanted.wake()
            result.append((shard, here))
        return result

    def _shard(self, node_name: str) -> Shard:
        shard = self.shards.get(node_name)
        if shard is None:
            shard = self.shards[node_name] = Shard(node_name, self._probe_channel(node_name))
            shard.wanted.open()
            shard.greenlet = gevent.spawn(self._run, shard)
        return shard

    def _probe_channel(self, node_name: str) -> str:
        """A probe channel in one of the node's slots (any will do)."""
        for attempt in range(100_000):
            channel = self.names.probe(f"{self.node_id}:{attempt}")
            try:
                owner = self.cluster.get_node_from_key(channel)
            except CLUSTER_ERRORS:
                owner = None
            if owner is not None and owner.name == node_name:
                return channel
        raise BrokerUnavailable(f"{node_name} serves no slot")

    def _retire(self, shard: Shard) -> None:
        """Nothing to carry: close the connection (the next channel there opens a new one)."""
        if shard.carries or shard.node_name in set(self.route.values()):
            return
        shard.retired = True
        self.shards.pop(shard.node_name, None)
        if shard.greenlet is not None and shard.greenlet is not gevent.getcurrent():
            shard.greenlet.kill(block=False)
        shard.wanted.release_all()  # nothing left to wait for here; a moved channel has its own waiter

    # -- the cluster changes ------------------------------------------------------

    def replan(self) -> None:
        """Read the slot map again and move every wanted channel whose slot has a new owner."""
        with self._replanning:
            try:
                self.store.refresh()
            except CLUSTER_ERRORS as exc:
                log.warning("cluster slot map not readable: %s", exc.__class__.__name__)
                return
            self._move_channels()

    def _move_channels(self) -> None:
        moved: dict[str, list[str]] = {}
        left: set[str] = set()
        for channel, node_name in list(self.route.items()):
            try:
                owner = self._owner(channel)
            except BrokerUnavailable:
                continue  # uncovered for now: stays where it is, retried at the next replan
            if owner != node_name:
                moved.setdefault(owner, []).append(channel)
                left.add(node_name)
        for owner, channels in moved.items():
            for channel in channels:
                old = self.shards.get(self.route[channel])
                if old is not None:
                    old.wanted.drop(channel)
                self.route[channel] = owner
            shard = self._shard(owner)
            shard.wanted.want(channels)
            shard.wanted.moved_in.update(channels)
            shard.wanted.wake()
            log.info("%d channels moved to shard %s", len(channels), owner)
        for node_name in left:
            old = self.shards.get(node_name)
            if old is None:
                continue
            if not old.carries:
                self._retire(old)
            else:
                old.wanted.stale = True  # remake its connection with what it still carries
                old.wanted.wake()

    def _watch_topology(self) -> None:
        while not self._stopping:
            gevent.sleep(self.topology_interval)
            try:
                if not self.route:
                    self._add(sorted(self.always))
                self.replan()
            except BrokerUnavailable:
                pass
            except Exception:  # the watcher must outlive any one bad read
                log.exception("cluster topology check failed")

    # -- one shard's owner greenlet ---------------------------------------------

    def _run(self, shard: Shard) -> None:
        try:
            self._serve(shard)
        finally:
            if shard.retired:
                shard.wanted.close()  # its wake-up pipe: a shard opened again gets a new one

    def _serve(self, shard: Shard) -> None:
        attempt = 0
        while not self._stopping and not shard.retired:
            started = time.monotonic()
            shard.wanted.stale = False
            session = self._session(shard)
            if session is not None:
                try:
                    session.run()
                except gevent.GreenletExit:
                    session.close()
                    raise
                except (*CLUSTER_ERRORS, OSError, ProbeFailed, SlotMoved, BrokerUnavailable) as exc:
                    self._lost(shard, session, f"{exc.__class__.__name__}: {exc}")
                except Exception as exc:  # a bug must not end delivery for the worker
                    log.exception("shard subscriber crashed")
                    self._lost(shard, session, f"crash: {exc.__class__.__name__}")
                finally:
                    session.close()
                    shard.last_alive = max(shard.last_alive, session.last_alive)
            if self._stopping or shard.retired:
                break
            self.reconnects += 1
            self.replan()
            attempt = 0 if time.monotonic() - started > 10 else attempt + 1
            gevent.sleep(random.uniform(0, min(BACKOFF_MAX, BACKOFF_BASE * 2 ** attempt)))

    def _session(self, shard: Shard) -> ShardSession | None:
        node = self.cluster.get_node(node_name=shard.node_name)
        if node is None:
            shard.why_not = "node left the cluster"
            return None
        try:
            probe = self._probe_channel(shard.node_name)
        except BrokerUnavailable as exc:
            shard.why_not = str(exc)
            return None
        if probe != shard.probe_channel:
            shard.wanted.always = {probe}
            shard.wanted.channels = (shard.wanted.channels - {shard.probe_channel}) | {probe}
            shard.probe_channel = probe
        shard.session = ShardSession(self.cluster.get_redis_connection(node), shard.wanted, self._listener,  # type: ignore[arg-type]
                                     probe, self.settings)
        return shard.session

    def _lost(self, shard: Shard, session: Session, why: str) -> None:
        if session.live:
            log.warning("redis shard subscriber %s lost: %s; reconnecting", shard.node_name, why)
        else:
            log.debug("redis shard subscriber %s still down: %s", shard.node_name, why)
        session.live = False
        shard.why_not = why
        shard.wanted.go_down()
