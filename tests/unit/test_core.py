"""The core owns subscriptions: the first local subscriber of a channel asks
the broker and waits, a failure rolls the hub back, later arrivals wait for
the same confirmation, the last one leaving releases the channel. The broker
here is a stand-in for our own ``Broker`` protocol (no Redis involved)."""

from __future__ import annotations

from typing import Any

import gevent
import pytest
from gevent.event import Event

from notifier.broker import Health
from notifier.broker.memory import MemoryHistory
from notifier.core import Core
from notifier.errors import BrokerUnavailable
from notifier.hub import Hub, Subscription


class ScriptedBroker:
    """Records calls; ``subscribe`` blocks until ``release`` is set, then fails if told to."""

    def __init__(self) -> None:
        self.subscribed: list[list[str]] = []
        self.unsubscribed: list[list[str]] = []
        self.release = Event()
        self.release.set()
        self.fail = False

    def start(self, listener: Any) -> None:
        self.listener = listener

    def stop(self) -> None:
        pass

    def subscribe(self, channels: list[str]) -> None:
        self.subscribed.append(sorted(channels))
        self.release.wait()
        if self.fail:
            raise BrokerUnavailable("no")

    def unsubscribe(self, channels: list[str]) -> None:
        self.unsubscribed.append(sorted(channels))

    def publish(self, notifications: list[Any]) -> list[Any]:
        return []

    def health(self) -> Health:
        return Health(True)


@pytest.fixture
def setup() -> tuple[Core, ScriptedBroker]:
    broker = ScriptedBroker()
    core = Core(Hub(), broker, MemoryHistory(), subscribe_timeout=0.5)
    core.start()
    return core, broker


def test_only_the_first_subscriber_of_a_channel_asks_the_broker(setup) -> None:
    core, broker = setup
    core.subscribe(Subscription("a", ["user:a", "bc"], 10))
    core.subscribe(Subscription("b", ["user:b", "bc"], 10))
    assert broker.subscribed == [["bc", "user:a"], ["user:b"]]


def test_a_failed_subscribe_rolls_the_hub_back_and_releases_what_it_took(setup) -> None:
    core, broker = setup
    broker.fail = True
    sub = Subscription("a", ["user:a", "bc"], 10)
    with pytest.raises(BrokerUnavailable):
        core.subscribe(sub)
    assert core.hub.channels() == [] and len(core.hub) == 0
    assert broker.unsubscribed == [["bc", "user:a"]], "nothing left subscribed for a client that got an error"


def test_a_later_arrival_waits_for_the_first_ones_confirmation(setup) -> None:
    core, broker = setup
    broker.release.clear()
    first = gevent.spawn(core.subscribe, Subscription("a", ["user:a", "bc"], 10))
    gevent.sleep(0)
    second = gevent.spawn(core.subscribe, Subscription("b", ["user:b", "bc"], 10))
    gevent.sleep(0.05)
    assert not second.ready(), "bc is not confirmed yet: the second stream must not go live"
    broker.release.set()
    first.get(timeout=1)
    second.get(timeout=1)


def test_a_later_arrival_fails_with_the_first_and_leaves_nothing(setup) -> None:
    core, broker = setup
    broker.release.clear()
    broker.fail = True
    first = gevent.spawn(core.subscribe, Subscription("a", ["bc"], 10))
    gevent.sleep(0)
    second = gevent.spawn(core.subscribe, Subscription("b", ["bc"], 10))
    gevent.sleep(0.01)
    broker.release.set()
    with pytest.raises(BrokerUnavailable):
        first.get(timeout=1)
    with pytest.raises(BrokerUnavailable):
        second.get(timeout=1)
    assert core.hub.channels() == []


def test_a_confirmation_that_never_comes_is_a_bounded_503(setup) -> None:
    core, broker = setup
    broker.release.clear()
    gevent.spawn(core.subscribe, Subscription("a", ["bc"], 10))
    gevent.sleep(0)
    late = Subscription("b", ["bc"], 10)
    with pytest.raises(BrokerUnavailable):
        core.subscribe(late)  # waits for the first one's confirmation, at most subscribe_timeout
    assert len(core.hub) == 1, "the late one is rolled back"
    broker.release.set()


def test_the_last_one_leaving_releases_the_channel(setup) -> None:
    core, broker = setup
    a, b = Subscription("a", ["bc"], 10), Subscription("b", ["bc"], 10)
    core.subscribe(a)
    core.subscribe(b)
    core.leave(a)
    assert broker.unsubscribed == []
    core.leave(b)
    assert broker.unsubscribed == [["bc"]]


def test_delivered_payloads_are_decoded_once_and_dispatched(setup) -> None:
    core, _broker = setup
    sub = Subscription("a", ["user:a"], 10)
    core.subscribe(sub)
    core.deliver("user:a", '{"id":"5-0","user_id":"a","type":"t","message":"m","data":{},"timestamp":"T"}')
    core.deliver("user:a", "not an envelope")  # dropped with a warning, never raised into the broker
    [delivery] = sub.take()
    assert delivery.id == (5, 0) and delivery.frame.startswith(b"id: 5-0\nevent: t\n")
