"""The ``Broker`` and ``History`` protocols, each held to one contract run
against the memory and the Redis implementation (a real redis-server,
unique key prefix per test). The core is left out: a recording listener
stands in for it (our own seam)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import gevent
import pytest

from notifier.broker import Broker, CatchUp, ChannelCatchUp, History
from notifier.broker.memory import MemoryBroker, MemoryHistory
from notifier.broker.redis import RedisBroker
from notifier.broker.redis_cluster import ClusterBroker
from notifier.broker.redis_cluster_history import ClusterHistory
from notifier.broker.redis_cluster_store import ClusterStore
from notifier.broker.redis_connect import make_cluster_client
from notifier.broker.redis_history import RedisHistory
from notifier.broker.redis_session import SessionSettings
from notifier.broker.redis_store import RedisStore, make_client
from notifier.channels import ChannelNames
from notifier.errors import BrokerUnavailable
from notifier.events import BROADCAST, Target, parse_event_id

from ..support.cores import note, pump_until


@dataclass
class Listener:
    received: list[tuple[str, str]] = field(default_factory=list)
    sessions: int = 0

    def deliver(self, channel: str, payload: str) -> None:
        self.received.append((channel, payload))

    def resubscribed(self, channels: list[str] | None = None) -> None:
        self.sessions += 1


@dataclass
class Backend:
    names: ChannelNames
    broker: Broker
    history: History
    listener: Listener
    kind: str = "memory"

    @property
    def per_channel(self) -> bool:
        """Ids ordered per channel only (Cluster)."""
        return self.kind == "cluster"


def open_backend(request: Any, kind: str, prefix: str) -> Iterator[Backend]:
    names = ChannelNames(prefix, hash_tags=kind == "cluster")
    broker: Any
    history: Any
    if kind == "cluster":
        cluster = make_cluster_client(request.getfixturevalue("redis_cluster").url, 2)
        broker = ClusterBroker(names, ClusterStore(cluster, names, history_max_events=5), SessionSettings(2, 0.5, 1))
        history = ClusterHistory(cluster, names, replay_max_events=50, reorder_ms=0, replay_max_bytes=20_000)
    elif kind == "memory":
        history = MemoryHistory(history_max_events=5, replay_max_events=50, replay_max_bytes=20_000)
        broker = MemoryBroker(names, history)
    else:
        client = make_client(request.getfixturevalue("redis_server").url, 2)
        broker = RedisBroker(names, RedisStore(client, names, history_max_events=5), SessionSettings(2, 0.5, 1))
        history = RedisHistory(client, names, replay_max_events=50, replay_max_bytes=20_000)
    listener = Listener()
    broker.start(listener)
    pump_until(lambda: broker.health().ok)
    yield Backend(names, broker, history, listener, kind)
    broker.stop()


@pytest.fixture(params=["memory", "redis", "cluster"])
def backend(request: Any, prefix: str) -> Iterator[Backend]:
    yield from open_backend(request, request.param, prefix)


@pytest.fixture(params=["memory", "redis"])
def one_order_backend(request: Any, prefix: str) -> Iterator[Backend]:
    """Ids ordered across channels (one sequence)."""
    yield from open_backend(request, request.param, prefix)


@pytest.fixture
def per_channel_backend(request: Any, prefix: str) -> Iterator[Backend]:
    """Ids ordered per channel only (Cluster)."""
    yield from open_backend(request, "cluster", prefix)


def test_a_subscribed_channel_reaches_the_listener_once_in_order(backend: Backend) -> None:
    alice = backend.names.user("alice")
    backend.broker.subscribe([alice])
    published = [backend.broker.publish(note(Target("user", "alice"), f"m{i}"))[0] for i in range(3)]
    backend.broker.publish(note(Target("user", "bob")))
    assert all(p.receivers == 1 for p in published)
    pump_until(lambda: len(backend.listener.received) >= 3)
    channels = [channel for channel, _payload in backend.listener.received]
    ids = [payload[7:payload.index('"', 7)] for _channel, payload in backend.listener.received]
    assert channels == [alice] * 3 and ids == [p.id for p in published], "bob's event is not for this worker"


def test_unsubscribe_stops_delivery_and_reports_no_receiver(backend: Backend) -> None:
    alice = backend.names.user("alice")
    backend.broker.subscribe([alice])
    backend.broker.unsubscribe([alice])
    # Redis: the UNSUBSCRIBE is sent by the owner greenlet; wait until the server agrees.
    pump_until(lambda: backend.broker.publish(note(Target("user", "alice")))[0].receivers == 0)
    before = len(backend.listener.received)
    backend.broker.publish(note(Target("user", "alice")))
    pump_until(lambda: True)
    assert len(backend.listener.received) == before


def test_health_names_the_broker_and_is_ok_when_started(backend: Backend) -> None:
    health = backend.broker.health()
    assert health.ok and health.reason == "ok" and health.broker in ("memory", "redis", "redis-cluster")


def test_publish_is_all_or_nothing_and_ids_increase_across_channels(backend: Backend) -> None:
    batch = note(Target("user", "u1")) + note(BROADCAST) + note(Target("topic", "orders:1"))
    channels = [backend.names.user("u1"), backend.names.broadcast, backend.names.topic("orders:1")]
    ids = [parse_event_id(p.id) for p in backend.broker.publish(batch)]
    if backend.per_channel:
        # One sequence per channel: each channel's ids increase; across channels only the clock orders them.
        again = [parse_event_id(p.id) for p in backend.broker.publish(batch)]
        assert all(a < b for a, b in zip(ids, again))
        assert backend.history.last_id(channels) == max(again)  # type: ignore[type-var]
        return
    assert ids == sorted(ids) and len(set(ids)) == 3
    assert backend.history.last_id(channels) == ids[-1]


def test_history_replays_after_an_id_and_pages_newest_first(backend: Backend) -> None:
    names, broker, history = backend.names, backend.broker, backend.history
    first = broker.publish(note(Target("user", "carol"), "0"))[0]
    later = [broker.publish(note(Target("user", "carol"), str(i)))[0].id for i in range(1, 4)]
    channels = names.for_subscriber("carol", [])
    replay = history.replay(channels, parse_event_id(first.id))  # type: ignore[arg-type]
    assert not replay.reset and [d.id for d in replay.events] == [parse_event_id(i) for i in later]
    page = history.recent(channels, None, 2)
    assert [d.id for d in page] == [parse_event_id(later[2]), parse_event_id(later[1])]
    assert history.replay(channels, (history.last_id(channels)[0] + 60_000, 0)).reason == "unknown_id"


def test_history_catch_up_per_channel_reads_after_each_point_and_finds_trimmed_channels(
        per_channel_backend: Backend) -> None:
    backend = per_channel_backend
    history = backend.history
    assert isinstance(history, ChannelCatchUp)
    names, broker = backend.names, backend.broker
    quiet, busy = names.user("quiet"), names.user("busy")
    q0 = parse_event_id(broker.publish(note(Target("user", "quiet"), "q0"))[0].id)
    b0 = parse_event_id(broker.publish(note(Target("user", "busy"), "b0"))[0].id)
    q1 = parse_event_id(broker.publish(note(Target("user", "quiet"), "q1"))[0].id)
    found, gaps = history.since({quiet: q0, busy: (0, 0)})
    assert sorted((c, d.id) for c, d in found) == sorted([(quiet, q1), (busy, b0)]) and gaps == []
    for _ in range(10):  # the history keeps 5 per channel
        broker.publish(note(Target("user", "busy")))
    assert history.since({quiet: q0, busy: b0})[1] == [busy]


def test_replay_is_too_many_past_its_byte_bound_and_pages_stop_at_theirs(backend: Backend) -> None:
    names, broker, history = backend.names, backend.broker, backend.history
    start = broker.publish(note(Target("user", "dave"), "small"))[0].id
    ids = [broker.publish(note(Target("user", "dave"), f"{i}" + "x" * 8_000))[0].id for i in range(3)]
    channels = names.for_subscriber("dave", [])
    assert history.replay(channels, parse_event_id(start)).reason == "too_many", "3 x 8 KB: over the 20 KB bound"  # type: ignore[arg-type]
    replay = history.replay(channels, parse_event_id(ids[0]))  # type: ignore[arg-type]
    assert not replay.reset and [d.id for d in replay.events] == [parse_event_id(i) for i in ids[1:]]
    page = history.recent(channels, None, 10, max_bytes=17_000)
    assert [d.id for d in page] == [parse_event_id(ids[2]), parse_event_id(ids[1])] and page.more
    last = history.recent(channels, page[-1].id, 10, max_bytes=17_000)
    assert [d.id for d in last] == [parse_event_id(ids[0]), parse_event_id(start)] and not last.more
    assert [d.id for d in history.recent(channels, None, 1, max_bytes=10)] == [parse_event_id(ids[2])], \
        "a page holds at least one event, whatever its size"


def test_history_catch_up_reads_between_two_ids_and_finds_trimmed_channels(one_order_backend: Backend) -> None:
    backend = one_order_backend
    history = backend.history
    assert isinstance(history, CatchUp), "both histories can serve a subscriber's catch-up"
    names, broker = backend.names, backend.broker
    start = history.last_id()
    quiet, busy = names.user("quiet"), names.user("busy")
    kept = [broker.publish(note(Target("user", "quiet"), "q"))[0].id, broker.publish(note(Target("user", "busy"), "b"))[0].id]
    upto = history.last_id()
    broker.publish(note(Target("user", "quiet"), "after the cut"))
    found = history.between([quiet, busy], start, upto)
    assert [(channel, d.id) for channel, d in found] == [(quiet, parse_event_id(kept[0])), (busy, parse_event_id(kept[1]))]
    assert history.gaps([quiet, busy], upto) == []
    for _ in range(10):  # the history keeps 5 per channel
        broker.publish(note(Target("user", "busy")))
    assert history.gaps([quiet, busy], upto) == [busy]


def test_redis_subscribe_is_bounded_when_redis_is_gone(prefix: str) -> None:
    """No confirmation in time is an error the core can roll back, never a hang."""
    from ..support.processes import RedisServer

    server = RedisServer().start()
    names = ChannelNames(prefix)
    broker = RedisBroker(names, RedisStore(make_client(server.url, 0.5), names), SessionSettings(0.5, 0.2, 0.2),
                         subscribe_timeout=0.5)
    broker.start(Listener())
    try:
        pump_until(lambda: broker.health().ok)
        server.stop()
        pump_until(lambda: not broker.health().ok)
        with pytest.raises(BrokerUnavailable):
            broker.subscribe([names.user("alice")])
    finally:
        broker.stop()


def test_the_redis_subscriber_still_delivers_on_the_public_api_fallback(redis_server, prefix: str, monkeypatch) -> None:
    """On a redis-py release outside the tested range there is no socket
    descriptor to wait on: the session polls instead, and still delivers and
    follows the core's channel changes."""
    from notifier.broker import redis_session
    from notifier.runtime import redis as runtime_redis

    monkeypatch.setattr(redis_session, "connection_fileno", runtime_redis.public_connection_fileno)
    names = ChannelNames(prefix)
    broker = RedisBroker(names, RedisStore(make_client(redis_server.url, 2), names), SessionSettings(2, 0.5, 1))
    listener = Listener()
    broker.start(listener)
    try:
        pump_until(lambda: broker.health().ok)
        broker.subscribe([names.user("alice")])
        [sent] = broker.publish(note(Target("user", "alice")))
        pump_until(lambda: any(sent.id in payload for _channel, payload in listener.received))
    finally:
        broker.stop()


def test_a_channel_left_and_wanted_again_at_once_is_confirmed_at_once(backend: Backend) -> None:
    """The last client leaves and a new one arrives before the subscriber
    acted on the leave: the channel never stopped being subscribed, so the
    new client must not wait for a confirmation that will not come."""
    alice = backend.names.user("alice")
    backend.broker.subscribe([alice])
    backend.broker.unsubscribe([alice])
    backend.broker.subscribe([alice])  # raises BrokerUnavailable after the timeout if it waits in vain
    [sent] = backend.broker.publish(note(Target("user", "alice")))
    pump_until(lambda: any(sent.id in payload for _channel, payload in backend.listener.received))


def test_a_thousand_first_subscribers_at_once_are_all_confirmed(redis_server, prefix: str) -> None:
    """A reconnect storm or a fan-out ramp: every one of a thousand first
    subscribers is confirmed in time. (That a confirmation wakes only its own
    waiters is pinned in tests/unit/test_redis_wanted.py; its cost is the
    bench's to measure.)"""
    import gevent

    names = ChannelNames(prefix)
    broker = RedisBroker(names, RedisStore(make_client(redis_server.url, 2), names), SessionSettings(2, 0.5, 1),
                         subscribe_timeout=3)
    broker.start(Listener())
    try:
        pump_until(lambda: broker.health().ok)
        jobs = [gevent.spawn(broker.subscribe, [names.user(f"u{i}")]) for i in range(1000)]
        gevent.joinall(jobs, timeout=10)
        assert [job.exception for job in jobs if not job.successful()] == []
    finally:
        broker.stop()


def test_messages_that_arrive_while_a_session_confirms_wait_for_the_catch_up(redis_server, prefix: str) -> None:
    """A live message must not reach the core before the catch-up of what the
    outage missed: a stream would then drop the older, caught-up events as
    duplicates. Driven through the session itself, with our own listener."""
    from notifier.broker.redis_session import Session
    from notifier.broker.redis_wanted import Wanted

    calls: list[str] = []

    class Recorder(Listener):
        def deliver(self, channel: str, payload: str) -> None:
            calls.append("deliver")

        def resubscribed(self) -> None:
            calls.append("resubscribed")

    names = ChannelNames(prefix)
    client = make_client(redis_server.url, 2)
    wanted = Wanted({names.broadcast})
    wanted.open()
    session = Session(client, wanted, Recorder(), names.probe("t"), SessionSettings(2, 5, 3))
    try:
        session._handle({"type": "message", "channel": names.broadcast.encode(), "data": b"{}"})
        assert calls == [], "held while the session is not caught up"
        session.pubsub.subscribe(names.broadcast)  # connects, so the session can confirm
        session._requested = {names.broadcast}
        session._outstanding = {names.broadcast: 1}
        runner = gevent.spawn(session.run)
        pump_until(lambda: session.live)
        runner.kill()
        assert calls[:2] == ["resubscribed", "deliver"]
    finally:
        session.close()
        wanted.close()
        client.close()
