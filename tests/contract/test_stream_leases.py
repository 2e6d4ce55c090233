"""The ``StreamLeases`` capability (open streams per user, across processes),
one contract against the memory and the Redis implementation (a real
redis-server, unique key prefix per test); then what only Redis must do:
agree across processes, and let the leases of a process that died run out."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import gevent
import pytest

from notifier.admission import StreamAdmission
from notifier.broker import StreamLeases
from notifier.broker.memory import MemoryStreamLeases
from notifier.broker.redis_connect import make_cluster_client
from notifier.broker.redis_leases import RedisStreamLeases
from notifier.broker.redis_store import make_client
from notifier.channels import ChannelNames
from notifier.errors import BrokerUnavailable, TooManyStreams, WorkerFull

from ..support.cores import pump_until


def redis_leases(url: str, prefix: str, lease_seconds: float = 60) -> RedisStreamLeases:
    return RedisStreamLeases(make_client(url, 1), ChannelNames(prefix), lease_seconds)


@pytest.fixture(params=["memory", "redis", "cluster"])
def leases(request: Any, prefix: str) -> Iterator[StreamLeases]:
    implementation: Any
    if request.param == "memory":
        implementation = MemoryStreamLeases()
    elif request.param == "cluster":
        # redis-py's Cluster pipeline refuses scripts: leases there are one call each.
        client = make_cluster_client(request.getfixturevalue("redis_cluster").url, 2)
        implementation = RedisStreamLeases(client, ChannelNames(prefix, hash_tags=True), 60)
    else:
        implementation = redis_leases(request.getfixturevalue("redis_server").url, prefix)
    implementation.start()
    yield implementation
    implementation.stop()


def settle() -> None:
    """Let a release's background removal run (this process is not monkey-patched)."""
    for _ in range(20):
        gevent.sleep(0.005)


def test_a_user_holds_at_most_the_limit_and_a_release_frees_a_place(leases: StreamLeases) -> None:
    assert [leases.acquire("alice", f"s{i}", 3) for i in range(4)] == [True, True, True, False]
    assert leases.acquire("bob", "s1", 3), "every user has their own count"
    leases.release("alice", "s1")
    settle()
    assert leases.acquire("alice", "s4", 3)
    assert not leases.acquire("alice", "s5", 3)
    leases.release("alice", "never-taken")  # harmless
    settle()
    assert not leases.acquire("alice", "s6", 3)


def test_leases_asked_for_at_once_still_hold_each_user_to_the_limit(leases: StreamLeases) -> None:
    """Thirty streams of two users opening in the same turn of the loop (the
    Redis leases go in one pipeline): each user gets exactly the limit."""
    asks = [(user, gevent.spawn(leases.acquire, user, f"{user}-{i}", 5)) for i in range(15) for user in ("alice", "bob")]
    gevent.joinall([ask for _, ask in asks], timeout=10)
    assert all(ask.successful() for _, ask in asks)
    taken = {user: sum(1 for u, ask in asks if u == user and ask.value is True) for user in ("alice", "bob")}
    assert taken == {"alice": 5, "bob": 5}


def test_admission_caps_the_worker_first_then_the_user(leases: StreamLeases) -> None:
    admission = StreamAdmission(leases, per_user=2, per_worker=3, retry_after_seconds=4)
    first, _second = admission.admit("alice"), admission.admit("alice")
    with pytest.raises(TooManyStreams) as user_cap:
        admission.admit("alice")
    assert user_cap.value.status == 429 and user_cap.value.headers == {"Retry-After": "4"}
    admission.admit("bob")
    with pytest.raises(WorkerFull) as worker_cap:
        admission.admit("carol")
    assert worker_cap.value.status == 503 and worker_cap.value.headers == {"Retry-After": "4"}
    assert admission.open == 3, "refusals take nothing"
    admission.release("alice", first)
    settle()
    admission.admit("carol")


def test_anonymous_streams_count_against_the_worker_only(leases: StreamLeases) -> None:
    """compat.flask_sse's streams have no user: no lease is taken or given back."""
    admission = StreamAdmission(leases, per_user=1, per_worker=2, retry_after_seconds=4)
    first, _second = admission.admit(None), admission.admit(None)
    with pytest.raises(WorkerFull):
        admission.admit(None)
    with pytest.raises(WorkerFull):
        admission.admit("alice")
    admission.release(None, first)
    settle()
    assert admission.open == 1
    admission.admit("alice")
    with pytest.raises(TooManyStreams):
        StreamAdmission(leases, per_user=1, per_worker=9, retry_after_seconds=4).admit("alice")


def test_redis_leases_agree_across_processes(redis_server, prefix) -> None:
    pod_a, pod_b = redis_leases(redis_server.url, prefix), redis_leases(redis_server.url, prefix)
    assert pod_a.acquire("alice", "a1", 2) and pod_b.acquire("alice", "b1", 2)
    assert not pod_a.acquire("alice", "a2", 2) and not pod_b.acquire("alice", "b2", 2)
    pod_b.release("alice", "b1")
    pump_until(lambda: pod_a.acquire("alice", "a2", 2))


def test_a_dead_process_s_leases_run_out_and_a_live_one_s_are_renewed(redis_server, prefix) -> None:
    dead, alive = redis_leases(redis_server.url, prefix, 3), redis_leases(redis_server.url, prefix, 3)
    alive.start()
    try:
        assert dead.acquire("alice", "dead-1", 2) and alive.acquire("alice", "alive-1", 2)
        # `dead` never renews and never releases: its process was killed.
        started = time.monotonic()
        pump_until(lambda: alive.acquire("alice", "alive-2", 2), timeout=6)
        waited = time.monotonic() - started
        assert 2 < waited < 4.5, f"the dead lease ran out after its 3 s, not before ({waited:.1f} s)"
        assert not alive.acquire("alice", "alive-3", 2), "the live leases were renewed past their 3 s"
    finally:
        alive.stop()


def test_redis_leases_refuse_with_503_when_redis_is_unreachable(prefix) -> None:
    from ..support.processes import RedisServer

    server = RedisServer().start()
    leases = redis_leases(server.url, prefix)
    server.stop()
    with pytest.raises(BrokerUnavailable):
        leases.acquire("alice", "s1", 3)
    assert leases.held == {}, "nothing recorded as held"


def test_a_redis_that_forgot_the_lease_script_still_grants_leases(redis_server, prefix) -> None:
    """Leases go as EVALSHA in a pipeline; a server without the script (restarted,
    SCRIPT FLUSH) answers NOSCRIPT and the lease is taken by loading it."""
    leases = redis_leases(redis_server.url, prefix)
    leases.client.script_flush()
    assert [leases.acquire("alice", f"s{i}", 2) for i in range(3)] == [True, True, False]


def test_leases_on_a_cluster_are_renewed(redis_cluster, prefix) -> None:
    """Renewal went through a pipeline, which a Cluster refuses for scripts:
    the renewer died and the leases ran out after their lifetime."""
    client = make_cluster_client(redis_cluster.url, 2)
    leases = RedisStreamLeases(client, ChannelNames(prefix, hash_tags=True), lease_seconds=2)
    assert leases.acquire("alice", "s1", 1) and leases.acquire("bob", "s1", 1)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        leases.renew()
        gevent.sleep(0.5)
    assert not leases.acquire("alice", "s2", 1), "alice's lease was renewed past its 2 s"
    assert not leases.acquire("bob", "s2", 1)
