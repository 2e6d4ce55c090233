"""notifier.Publisher (Python services publish straight to Redis) writes what
the HTTP API writes, and the embedded broker forgets channels gone quiet."""

from __future__ import annotations

import json

import pytest

from notifier import Publisher
from notifier.broker.memory import MemoryBroker
from notifier.broker.redis import RedisBroker
from notifier.channels import ChannelNames
from notifier.config import Config
from notifier.errors import InvalidEvent, PayloadTooLarge
from notifier.events import Limits, parse_event_id, validate_notification
from notifier.hub import Hub, Subscription

from .test_broker_contract import pump_until


def test_publisher_events_reach_subscribers_in_the_service_wire_format(redis_server, prefix) -> None:
    hub = Hub()
    names = ChannelNames(prefix)
    broker = RedisBroker(hub, names, redis_server.url, probe_interval=0.5, probe_timeout=1)
    broker.start()
    config = Config.for_testing(redis_url=redis_server.url, redis_prefix=prefix)
    publisher = Publisher.from_config(config)
    try:
        pump_until(lambda: broker.ready()[0])
        alice = Subscription("alice", names.for_subscriber("alice", ["orders:1"]), 100)
        broker.attach(alice)
        one = publisher.notify("alice", "Shipped!\n", type="order.shipped", data={"order": 42})
        many = publisher.notify_many(["alice", "bob"], "hi")
        topic = publisher.publish_topic("orders:1", "packed")
        everyone = publisher.broadcast("maintenance")
        assert one.receivers == 1 and [p.receivers for p in many] == [1, 0]
        pump_until(lambda: len(alice.queue) == 4)
        got = [json.loads(d.payload) for d in alice.take()]
        assert [g["id"] for g in got] == [one.id, many[0].id, topic.id, everyone.id]
        assert got[0] == {"id": one.id, "user_id": "alice", "type": "order.shipped", "message": "Shipped!\n",
                          "data": {"order": 42}, "timestamp": got[0]["timestamp"]}
        assert got[2]["topic"] == "orders:1" and got[3]["broadcast"] is True
        # Stored in the same history the service replays from.
        replay = broker.replay(names.for_subscriber("alice", []), parse_event_id(one.id))
        assert [d.id for d in replay.events] == [parse_event_id(many[0].id), parse_event_id(everyone.id)]
        # Validated like the HTTP API.
        with pytest.raises(InvalidEvent):
            publisher.notify("alice\r\nevent: forged", "x")
        with pytest.raises(InvalidEvent):
            publisher.publish_topic("bad topic", "x")
        with pytest.raises(PayloadTooLarge):
            publisher.notify("alice", "x" * (config.max_payload_bytes + 1))
    finally:
        publisher.close()
        broker.stop()


def test_from_config_needs_redis() -> None:
    with pytest.raises(ValueError, match="NOTIFIER_REDIS_URL"):
        Publisher.from_config(Config.for_testing())


def test_memory_broker_forgets_channels_gone_quiet() -> None:
    broker = MemoryBroker(Hub(), ChannelNames(), history_max_age_seconds=1)
    note = validate_notification({"user_id": "early", "message": "x"}, Limits(), "T")
    broker.publish(note)
    assert broker.names.user("early") in broker._history
    # Later publishes (ids from a clock past the age bound) sweep it away.
    broker._ids.last = (broker._ids.last[0] + 5_000, 0)
    for i in range(MemoryBroker.PRUNE_EVERY):
        broker.publish(validate_notification({"user_id": f"u{i % 3}", "message": "x"}, Limits(), "T"))
    assert broker.names.user("early") not in broker._history
    assert all(broker.names.user(f"u{i}") in broker._history for i in range(3))
