"""Redis Cluster on loopback (``redis-cli --cluster create``): 3 masters,
real gunicorn (2 gevent workers) on a ``redis+cluster://`` URL, and
EventSource-like clients whose channels sit on different shards.

- every user receives their own events (and broadcasts), nothing else;
- each worker holds at most one pub/sub connection per shard (CLIENT LIST);
- a live channel's slot migrates (SETSLOT IMPORTING/MIGRATING, MIGRATE,
  SETSLOT NODE) during a publish stream, and a master is SIGKILLed and its
  replica promoted: no event lost, duplicated or reordered per channel.

The numbers are printed (docs/delivery.md quotes them).
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from redis.crc import key_slot

from bench.topologies import Cluster

from ..support.delivery import Tally, outcome, summary, wait_received
from ..support.processes import Gunicorn, wait_until
from ..support.sockets import connection_owners
from .test_chaos import FAST, clients

pytestmark = pytest.mark.chaos

PREFIX = "notifier:"


def slot_of_user(user: str) -> int:
    return key_slot(f"{PREFIX}{{user:{user}}}".encode())


def users_on_every_shard(cluster: Cluster, per_shard: int, tag: str) -> list[str]:
    """``per_shard`` users for each master, so every shard carries channels."""
    owners = {node.port: [] for node in cluster.masters()}  # type: dict[int, list[str]]
    for i in range(10_000):
        user = f"{tag}{i}"
        port = cluster.owner_of(slot_of_user(user)).port
        if len(owners[port]) < per_shard:
            owners[port].append(user)
        if all(len(users) == per_shard for users in owners.values()):
            break
    return [user for users in owners.values() for user in users]


@contextmanager
def gunicorn_on(cluster: Cluster, **env: str) -> Iterator[Gunicorn]:
    server = Gunicorn({**FAST, "NOTIFIER_REDIS_URL": cluster.url, **env}, workers=2)
    try:
        server.start()
        yield server
    finally:
        server.stop()


def pubsub_connections_by_worker(cluster: Cluster, workers: list[int]) -> dict[int, dict[int, int]]:
    """{node port: {worker pid: pub/sub connections}} from CLIENT LIST and /proc."""
    owners = connection_owners(workers)
    found: dict[int, dict[int, int]] = {}
    for node in cluster.masters():
        per_worker: dict[int, int] = {}
        for line in node.command("CLIENT", "LIST").splitlines():
            fields = dict(item.split("=", 1) for item in line.split() if "=" in item)
            if int(fields.get("sub", 0)) + int(fields.get("psub", 0)) + int(fields.get("ssub", 0)) == 0:
                continue
            pid = owners.get((int(fields["addr"].rsplit(":", 1)[1]), node.port))
            if pid is not None:
                per_worker[pid] = per_worker.get(pid, 0) + 1
        found[node.port] = per_worker
    return found


def test_users_on_different_shards_get_their_own_events_and_one_connection_per_shard(redis_cluster) -> None:
    users = users_on_every_shard(redis_cluster, 2, "shard")
    with gunicorn_on(redis_cluster) as server, clients([server.url], users) as group:
        tally = Tally(server.url, users, broadcast_every=3)
        for number in range(12):
            tally.step(number)
        wait_received(group, tally)
        outcomes = [outcome(client, tally) for client in group]
        for client, result in zip(group, outcomes):
            assert not result.lost and not result.duplicated and not result.reordered, result
            assert result.received == result.acknowledged, f"{client.user} got events that were not theirs"
            assert {n.get("user_id") for n in client.notifications()} <= {client.user, None}
        connections = pubsub_connections_by_worker(redis_cluster, server.worker_pids())
        assert all(count == 1 for per in connections.values() for count in per.values()), connections
        shards_used = [port for port, per in connections.items() if per]
        assert len(shards_used) == 3, f"every shard carries a channel: {connections}"


def test_slot_migration_of_a_live_channel_loses_nothing() -> None:
    cluster = Cluster(masters=3).start()
    try:
        users = users_on_every_shard(cluster, 1, "mig")
        moving = users[0]
        slot = slot_of_user(moving)
        with gunicorn_on(cluster) as server, clients([server.url], users) as group:
            tally = Tally(server.url, users, broadcast_every=5)
            source = cluster.owner_of(slot)
            target = next(node for node in cluster.masters() if node.port != source.port)
            mover = threading.Thread(target=lambda: (time.sleep(0.5), cluster.migrate_slot(slot, target, pause=0.5)),
                                     daemon=True)
            mover.start()
            for number in range(120):
                tally.step(number)
                time.sleep(0.005)
            mover.join(30)
            assert cluster.owner_of(slot).port == target.port, "the slot moved"
            for number in range(120, 140):
                tally.step(number)
            wait_received(group, tally)
            outcomes = [outcome(client, tally) for client in group]
            print("SLOT MIGRATION", slot, source.port, "->", target.port, summary(outcomes, tally))
            for result in outcomes:
                assert not result.lost and not result.duplicated and not result.reordered, result
            assert "moved to shard" in server.log() or "left this shard" in server.log()
    finally:
        cluster.stop()


def test_master_sigkill_with_replica_promotion_loses_nothing() -> None:
    cluster = Cluster(masters=3, replicas=1).start()
    try:
        users = users_on_every_shard(cluster, 1, "fo")
        victim = cluster.owner_of(slot_of_user(users[0]))
        replica = cluster.replica_of(victim)
        wait_until(lambda: "master_link_status:up" in replica.command("INFO", "replication"), 10,
                   message="replica in sync")
        with gunicorn_on(cluster, NOTIFIER_REDIS_MIN_REPLICAS="1") as server, clients([server.url], users) as group:
            tally = Tally(server.url, users, broadcast_every=5)
            def kill_and_return() -> None:
                time.sleep(0.5)
                victim.kill(signal.SIGKILL)
                cluster.wait_promoted(replica)
                victim.start()  # rejoins (nodes.conf kept) as the new master's replica: WAIT 1 can succeed again

            killer = threading.Thread(target=kill_and_return, daemon=True)
            killer.start()
            for number in range(100):
                tally.step(number, within=40)
                time.sleep(0.005)
            killer.join(40)
            for number in range(100, 120):
                tally.step(number, within=40)
            wait_received(group, tally, timeout=40)
            outcomes = [outcome(client, tally) for client in group]
            print("MASTER SIGKILL", victim.port, "->", replica.port, summary(outcomes, tally))
            for result in outcomes:
                assert not result.duplicated and not result.reordered, result
                assert not result.lost, result
    finally:
        cluster.stop()
