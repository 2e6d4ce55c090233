"""notifier.Publisher (Python services publish straight to Redis) writes what
the HTTP API writes, and the embedded broker forgets channels gone quiet."""

from __future__ import annotations

import json

import pytest

from notifier import Publisher
from notifier.broker.memory import MemoryHistory
from notifier.channels import ChannelNames
from notifier.config import Config
from notifier.errors import InvalidEvent, PayloadTooLarge
from notifier.events import parse_event_id
from notifier.hub import Subscription
from notifier.validation import Limits, validate_notification

from ..support.cores import make_core, pump_until


def test_publisher_events_reach_subscribers_in_the_service_wire_format(redis_server, prefix) -> None:
    names = ChannelNames(prefix)
    core = make_core(redis_server.url, prefix)
    config = Config.for_testing(redis_url=redis_server.url, redis_prefix=prefix)
    publisher = Publisher.from_config(config)
    try:
        alice = Subscription("alice", names.for_subscriber("alice", ["orders:1"]), 100)
        core.subscribe(alice)
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
        replay = core.history.replay(names.for_subscriber("alice", []), parse_event_id(one.id))
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
        core.stop()


def test_from_config_needs_redis() -> None:
    with pytest.raises(ValueError, match="NOTIFIER_REDIS_URL"):
        Publisher.from_config(Config.for_testing())


def test_memory_history_forgets_channels_gone_quiet() -> None:
    history = MemoryHistory(history_max_age_seconds=1)
    names = ChannelNames()
    history.append(names.user("early"), validate_notification({"user_id": "early", "message": "x"}, Limits(), "T")[0])
    assert names.user("early") in history.channels
    # Later appends (ids from a clock past the age bound) sweep it away.
    history.ids.last = (history.ids.last[0] + 5_000, 0)
    for i in range(MemoryHistory.PRUNE_EVERY):
        [item] = validate_notification({"user_id": f"u{i % 3}", "message": "x"}, Limits(), "T")
        history.append(names.user(f"u{i % 3}"), item)
    assert names.user("early") not in history.channels
    assert all(names.user(f"u{i}") in history.channels for i in range(3))
