"""One contract for each guard capability, run against the memory and the
Redis implementation (a real redis-server): single-use expiring tickets and
a per-key token bucket. The Redis ones are shared: two instances stand for
two pods."""

from __future__ import annotations

import threading
import time

import pytest

from notifier.broker.memory_guards import MemoryRateLimiter, MemoryTickets
from notifier.broker.redis_guards import RedisRateLimiter, RedisTickets
from notifier.broker.redis_store import make_client
from notifier.errors import BrokerUnavailable


@pytest.fixture(params=["memory", "redis"])
def tickets(request, prefix):
    """Two handles on one store: for Redis two clients (two pods), for memory the same object."""
    if request.param == "memory":
        store = MemoryTickets()
        yield store, store
        return
    server = request.getfixturevalue("redis_server")
    clients = [make_client(server.url) for _ in range(2)]
    yield tuple(RedisTickets(client, prefix) for client in clients)
    for client in clients:
        client.connection_pool.disconnect()


@pytest.fixture(params=["memory", "redis"])
def limiter_pair(request, prefix):
    def make(rate: float, burst: int):
        if request.param == "memory":
            limiter = MemoryRateLimiter(rate, burst)
            return limiter, limiter
        server = request.getfixturevalue("redis_server")
        return tuple(RedisRateLimiter(make_client(server.url), prefix, rate, burst) for _ in range(2))
    return make


def test_a_ticket_is_taken_once_and_from_any_pod(tickets) -> None:
    one, other = tickets
    one.put("k1", "value-1", 30)
    assert other.take("k1") == "value-1"
    assert one.take("k1") is None and other.take("k1") is None
    assert one.take("never-issued") is None


def test_a_ticket_expires(tickets) -> None:
    one, other = tickets
    one.put("short", "v", 0.05)
    one.put("long", "w", 30)
    time.sleep(0.15)
    assert other.take("short") is None
    assert other.take("long") == "w"


def test_racing_redemptions_only_one_wins(tickets) -> None:
    one, other = tickets
    one.put("raced", "v", 30)
    got: list[str | None] = []
    barrier = threading.Barrier(16)

    def redeem(store) -> None:
        barrier.wait(5)
        got.append(store.take("raced"))

    threads = [threading.Thread(target=redeem, args=(one if i % 2 else other,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert got.count("v") == 1 and got.count(None) == 15


def test_the_bucket_allows_a_burst_then_spaces_requests(limiter_pair) -> None:
    one, other = limiter_pair(10, 3)
    assert [one.acquire("billing"), other.acquire("billing"), one.acquire("billing")] == [0, 0, 0]
    wait = other.acquire("billing")
    assert 0 < wait <= 0.1 + 0.01, "the fourth waits for one token at 10/s, counted across pods"
    assert one.acquire("shipping") == 0, "each publisher has its own bucket"
    time.sleep(wait + 0.02)
    assert one.acquire("billing") == 0
    assert other.acquire("billing") > 0


def test_a_refusal_is_not_counted(limiter_pair) -> None:
    one, _ = limiter_pair(20, 1)
    assert one.acquire("p") == 0
    for _ in range(50):
        assert one.acquire("p") > 0
    time.sleep(0.06)
    assert one.acquire("p") == 0, "refused requests did not push the next token further away"


def test_a_redis_outage_is_broker_unavailable(prefix) -> None:
    dead = make_client("redis://127.0.0.1:1/0", socket_timeout=0.5)
    with pytest.raises(BrokerUnavailable):
        RedisTickets(dead, prefix).put("k", "v", 30)
    with pytest.raises(BrokerUnavailable):
        RedisTickets(dead, prefix).take("k")
    with pytest.raises(BrokerUnavailable):
        RedisRateLimiter(dead, prefix, 1, 1).acquire("p")


def test_redis_keeps_only_digests_and_lets_idle_buckets_go(redis_server, prefix) -> None:
    client = make_client(redis_server.url)
    RedisRateLimiter(client, prefix, 100, 5).acquire("billing")
    ttl = redis_server.client().pttl(f"{prefix}rate:billing")
    assert 0 < ttl <= 5 / 100 * 1000 + 1000
    RedisTickets(client, prefix).put("abc", "v", 30)
    assert 0 < redis_server.client().pttl(f"{prefix}ticket:abc") <= 30_000
