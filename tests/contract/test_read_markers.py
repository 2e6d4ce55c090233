"""The ``ReadMarkers`` protocol (the inbox's read state), one contract run
against the memory and the Redis implementation (a real redis-server, a
unique key prefix per test)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from notifier.broker import ReadMarkers
from notifier.broker.memory_read import MemoryReadMarkers
from notifier.broker.redis_read import RedisReadMarkers
from notifier.broker.redis_store import make_client
from notifier.channels import ChannelNames
from notifier.events import ReadState

Factory = Callable[..., ReadMarkers]


@pytest.fixture(params=["memory", "redis", "cluster"])
def make(request: Any, prefix: str) -> Factory:
    if request.param == "memory":
        return lambda max_age=60, max_ids=5: MemoryReadMarkers(max_age, max_ids)
    if request.param == "cluster":
        from notifier.broker.redis_connect import make_cluster_client

        cluster = make_cluster_client(request.getfixturevalue("redis_cluster").url, 2)
        names = ChannelNames(prefix, hash_tags=True)
        return lambda max_age=60, max_ids=5: RedisReadMarkers(cluster, names, max_age, max_ids)
    client = make_client(request.getfixturevalue("redis_server").url, 2)
    return lambda max_age=60, max_ids=5: RedisReadMarkers(client, ChannelNames(prefix), max_age, max_ids)


def test_nothing_is_read_at_first(make: Factory) -> None:
    assert make().state("alice") == ReadState()


def test_the_marker_only_moves_forward(make: Factory) -> None:
    markers = make()
    assert markers.mark_up_to("alice", (1700000000500, 2)).up_to == (1700000000500, 2)
    assert markers.mark_up_to("alice", (1700000000500, 1)).up_to == (1700000000500, 2), "never back"
    assert markers.mark_up_to("alice", (1700000000400, 9)).up_to == (1700000000500, 2)
    assert markers.mark_up_to("alice", (1700000000500, 3)).up_to == (1700000000500, 3)
    assert markers.state("bob") == ReadState(), "per user"


def test_single_ids_after_the_marker_and_the_marker_absorbing_them(make: Factory) -> None:
    markers = make()
    markers.mark_up_to("alice", (1000, 0))
    state = markers.mark_ids("alice", [(2000, 0), (2000, 1), (3000, 0), (500, 0)])
    assert state.ids == {(2000, 0), (2000, 1), (3000, 0)}, "an id the marker covers is not kept apart"
    assert state.is_read((500, 0)) and state.is_read((2000, 1)) and not state.is_read((2500, 0))
    state = markers.mark_up_to("alice", (2000, 0))
    assert state.ids == {(2000, 1), (3000, 0)}
    assert markers.state("alice") == state


def test_single_ids_are_bounded_newest_kept(make: Factory) -> None:
    markers = make(max_ids=5)
    state = markers.mark_ids("alice", [(1000 + i, 0) for i in range(12)])
    assert state.ids == {(1000 + i, 0) for i in range(7, 12)}


def test_a_marker_expires_with_the_history_age(make: Factory) -> None:
    markers = make(max_age=1)
    markers.mark_up_to("alice", (1000, 0))
    markers.mark_ids("alice", [(2000, 0)])
    time.sleep(2.1)
    assert markers.state("alice") == ReadState()


def test_redis_markers_survive_a_restart_of_the_service(redis_server: Any, prefix: str) -> None:
    client = make_client(redis_server.url, 2)
    RedisReadMarkers(client, ChannelNames(prefix)).mark_up_to("alice", (1000, 3))
    again = RedisReadMarkers(make_client(redis_server.url, 2), ChannelNames(prefix))
    assert again.state("alice").up_to == (1000, 3)
