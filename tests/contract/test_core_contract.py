"""One contract, two backends: the core over the embedded memory broker and
over the Redis broker (against a real redis-server, unique key prefix per
test): what a worker's subscriptions receive, replay and release."""

from __future__ import annotations

import time
from collections.abc import Iterator

import gevent
import pytest
from redis.crc import key_slot

from notifier.channels import ChannelNames
from notifier.core import Core
from notifier.events import BROADCAST, Target, format_event_id, parse_event_id
from notifier.hub import Subscription

from ..support.cores import make_core, note, pump_until
from ..support.cores import subscribe as attach_to
from ..support.processes import RedisServer
from ..support.redis_proxy import RedisProxy


@pytest.fixture(params=["memory", "redis", "cluster"])
def setup(request, prefix) -> Iterator[tuple]:
    names = ChannelNames(prefix, hash_tags=request.param == "cluster")
    url = {"redis": lambda: request.getfixturevalue("redis_server").url,
           "cluster": lambda: request.getfixturevalue("redis_cluster").url}.get(request.param, lambda: None)()
    # reorder 0: the contract's replays are exact; the Cluster's window has its own test below.
    core = make_core(url, prefix, history_max_events=5, replay_max_events=50, cluster_reorder_ms=0)
    yield core.hub, names, core
    core.stop()


def attach(core: Core, names: ChannelNames, user: str) -> Subscription:
    return attach_to(core, names, user)


def test_publish_reaches_only_the_addressed_user(setup) -> None:
    hub, names, broker = setup
    alice, bob = attach(broker, names, "alice"), attach(broker, names, "bob")
    [published] = broker.publish(note(Target("user", "alice"), "for alice"))
    assert published.receivers >= 1
    pump_until(lambda: alice.queue)
    gevent.sleep(0.05)
    [got] = alice.take()
    assert got.payload and '"for alice"' in got.payload and got.id == parse_event_id(published.id)
    assert bob.take() == []


def test_broadcast_reaches_everyone(setup) -> None:
    hub, names, broker = setup
    subs = [attach(broker, names, f"u{i}") for i in range(5)]
    broker.publish(note(BROADCAST, "all"))
    pump_until(lambda: all(sub.queue for sub in subs))


def test_ids_are_unique_and_increase_across_channels(setup) -> None:
    hub, names, broker = setup
    published = []
    for i in range(20):
        published += broker.publish(note(Target("user", f"u{i % 3}")) + note(BROADCAST))
    ids = [parse_event_id(p.id) for p in published]
    if broker.per_channel:  # Cluster: one sequence per channel
        for channel in {names.for_target(p.notification.target) for p in published}:
            mine = [parse_event_id(p.id) for p in published if names.for_target(p.notification.target) == channel]
            assert mine == sorted(mine) and len(set(mine)) == len(mine)
        return
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert broker.history.last_id() == ids[-1]


def test_unsubscribed_channel_gets_nothing_and_reports_no_receiver(setup) -> None:
    hub, names, broker = setup
    [published] = broker.publish(note(Target("user", "ghost")))
    assert published.receivers == 0


def test_replay_after_an_id_across_channels_in_order(setup) -> None:
    hub, names, broker = setup
    first_broadcast = broker.publish(note(BROADCAST, "b0"))[0]
    first = broker.publish(note(Target("user", "alice"), "0"))[0]
    own, broadcast = [], []
    for i in range(1, 4):
        own.append(parse_event_id(broker.publish(note(Target("user", "alice"), str(i)))[0].id))
        broadcast.append(parse_event_id(broker.publish(note(BROADCAST, f"b{i}"))[0].id))
        broker.publish(note(Target("user", "bob"), "not alice's"))
    if broker.per_channel:
        # Cluster: ids are ordered per channel only, and one id says nothing
        # of another channel's (docs/delivery.md; resuming over several
        # channels is the core's job: the Cluster resume test below). Each
        # channel replays after an id of its own.
        for channel, after, expected in ((names.for_target(Target("user", "alice")), first, own),
                                         (names.for_target(BROADCAST), first_broadcast, broadcast)):
            replay = broker.history.replay([channel], parse_event_id(after.id))
            assert not replay.reset
            assert [e.id for e in replay.events] == expected
        return
    replay = broker.history.replay(names.for_subscriber("alice", []), parse_event_id(first.id))
    assert not replay.reset
    assert [e.id for e in replay.events] == [i for pair in zip(own, broadcast) for i in pair]


def test_replay_resets_on_unknown_or_trimmed_ids(setup) -> None:
    hub, names, broker = setup
    first = broker.publish(note(Target("user", "alice")))[0]
    channels = names.for_subscriber("alice", [])
    future = (parse_event_id(first.id)[0] + 10_000, 0)
    assert broker.history.replay(channels, future).reset
    for _ in range(30):  # history keeps 5 per channel
        broker.publish(note(Target("user", "alice")))
    replay = broker.history.replay(channels, parse_event_id(first.id))
    assert replay.reset and replay.reason == "too_old"
    latest = broker.history.last_id(channels)
    assert broker.history.replay(channels, latest).events == [] and not broker.history.replay(channels, latest).reset


def test_recent_is_newest_first_and_pages(setup) -> None:
    hub, names, broker = setup
    ids = [broker.publish(note(Target("user", "carol"), str(i)))[0].id for i in range(4)]
    channels = names.for_subscriber("carol", [])
    page = broker.history.recent(channels, None, 2)
    assert [d.id for d in page] == [parse_event_id(ids[3]), parse_event_id(ids[2])]
    older = broker.history.recent(channels, page[-1].id, 10)
    assert [d.id for d in older] == [parse_event_id(ids[1]), parse_event_id(ids[0])]


def test_detach_releases_channels(setup, request) -> None:
    hub, names, broker = setup
    sub = attach(broker, names, "dave")
    channel = names.user("dave")
    assert hub.has_channel(channel)
    broker.leave(sub)
    assert not hub.has_channel(channel)
    if request.node.callspec.params["setup"] == "redis":
        client = request.getfixturevalue("redis_server").client()
        pump_until(lambda: dict(client.pubsub_numsub(channel))[channel.encode()] == 0)
        assert dict(client.pubsub_numsub(names.broadcast))[names.broadcast.encode()] == 1, "broadcast always stays"
    if request.node.callspec.params["setup"] == "cluster":
        cluster = request.getfixturevalue("redis_cluster")

        def shard_subscribers(name: str) -> int:
            node = cluster.owner_of(key_slot(name.encode()))
            return int(node.command("PUBSUB", "SHARDNUMSUB", name).splitlines()[1])

        pump_until(lambda: shard_subscribers(channel) == 0)
        assert shard_subscribers(names.broadcast) == 1, "broadcast always stays"


def test_cluster_resume_over_several_channels_never_skips_a_lower_id_of_another_channel(redis_cluster, prefix) -> None:
    """On a Cluster ids are ordered per channel: an event of another channel
    with a lower id than the client's Last-Event-ID may have been in flight
    when the client left. The replay reads each channel from
    NOTIFIER_CLUSTER_REORDER_MS before the resume point, so it is not skipped."""
    core = make_core(redis_cluster.url, prefix, cluster_reorder_ms=2000)
    names = ChannelNames(prefix, hash_tags=True)
    try:
        [in_flight] = core.publish(note(BROADCAST, "published first, not yet received"))
        time.sleep(0.005)  # ids of different shards are only ordered by their millisecond: make them differ
        [received] = core.publish(note(Target("user", "erin"), "received, its id is the resume point"))
        assert parse_event_id(in_flight.id) < parse_event_id(received.id)
        sub = Subscription("erin", names.for_subscriber("erin", []), 100)
        opening = core.open(sub, received.id)
        replayed = [d.payload for d in opening.events]
        assert any("not yet received" in payload for payload in replayed), "the lower id of the other channel came"
        core.leave(sub)
    finally:
        core.stop()


def test_a_message_cut_across_reads_is_waited_for_not_taken_for_a_dead_connection(prefix) -> None:
    """Under load a pub/sub message often ends past the bytes already read.
    The subscriber must wait for the rest, not drop the connection (a
    reconnect, a catch-up burst and, for streams already behind, evictions:
    seen in the fan-out benchmark)."""
    server = RedisServer().start()
    proxy = RedisProxy(server.port)
    names = ChannelNames(prefix)
    broker = make_core(proxy.url, prefix, redis_socket_timeout=2)
    try:
        alice = attach(broker, names, "alice")
        assert proxy.split_pubsub(0.1) == 1
        published = [broker.publish(note(Target("user", "alice"), f"m{i}"))[0].id for i in range(10)]
        got: list = []
        pump_until(lambda: got.extend(alice.take()) or len(got) >= 10, timeout=15)
        assert [format_event_id(d.id) for d in got] == published, "each once, in order"
        assert broker.health().reconnects == 0, "the subscriber never gave up on a healthy connection"
    finally:
        broker.stop()
        proxy.close()
        server.stop()


def test_a_worker_that_started_on_an_empty_history_catches_up_after_a_reconnect(redis_server, prefix) -> None:
    """Events this worker never heard (a silent pub/sub death) come from
    history after the reconnect, even when its first session began on an
    empty history (a new deployment) and it has received nothing since."""
    proxy = RedisProxy(redis_server.port)
    names = ChannelNames(prefix)  # a fresh prefix: an empty history
    broker = make_core(proxy.url, prefix, redis_socket_timeout=2, probe_interval_seconds=0.3, probe_timeout_seconds=0.5)
    try:
        alice = attach(broker, names, "alice")
        assert proxy.silence_pubsub() == 1
        published = [broker.publish(note(Target("user", "alice"), f"m{i}"))[0].id for i in range(3)]
        got: list = []
        pump_until(lambda: got.extend(alice.take()) or len(got) >= 3, timeout=10)
        assert [format_event_id(d.id) for d in got] == published
        assert broker.health().reconnects >= 1, "the probe noticed the silence and the subscriber reconnected"
    finally:
        broker.stop()
        proxy.close()


def test_a_worker_with_more_channels_than_one_drain_reads_resubscribes_after_a_reconnect(prefix) -> None:
    """After a reconnect one SUBSCRIBE asks for every channel and Redis answers
    them all at once: more whole replies than one drain hands over
    (DRAIN_MAX_MESSAGES) wait in the parser, and confirming must read on
    rather than wait on the socket (which has nothing more to say)."""
    from notifier.broker.redis_session import DRAIN_MAX_MESSAGES

    server = RedisServer().start()
    names = ChannelNames(prefix)
    core = make_core(server.url, prefix, redis_socket_timeout=2)
    admin = server.client()
    try:
        users = [f"u{i}" for i in range(2 * DRAIN_MAX_MESSAGES + 40)]
        subscriptions = [attach(core, names, user) for user in users]
        assert int(admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub")) == 1
        pump_until(lambda: core.health().reconnects >= 1 and core.health().ok, timeout=10)
        [published] = core.publish(note(Target("user", users[-1]), "after"))
        got: list = []
        pump_until(lambda: got.extend(subscriptions[-1].take()) or len(got) >= 1, timeout=5)
        assert [format_event_id(d.id) for d in got] == [published.id]
        assert core.health().reconnects == 1, "confirmed on the first try, not after timeouts"
    finally:
        admin.close()
        core.stop()
        server.stop()
