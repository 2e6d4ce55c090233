"""End to end: real gunicorn (2 gevent workers) + a real redis-server that
this module starts on a free loopback port."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import requests

from ..support import tokens
from ..support.processes import Gunicorn, RedisServer, redis_and_gunicorn, wait_until
from ..support.refusals import get_refusal
from ..support.sse import SSEConnection

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack() -> Iterator[tuple[Gunicorn, RedisServer]]:
    with redis_and_gunicorn({"NOTIFIER_HEARTBEAT_SECONDS": "0.5", "NOTIFIER_PROBE_INTERVAL_SECONDS": "1"}) as stack:
        yield stack


def connect(server: Gunicorn, user: str, **claims) -> SSEConnection:
    connection = SSEConnection(server.url + "/v1/events", tokens.bearer(tokens.token(user, **claims)))
    assert connection.status == 200, connection.read_body()
    assert connection.events(0.05) == [] and connection.parser.last_retry is not None, "first chunk arrives at once"
    return connection


def publish(server: Gunicorn, body) -> dict:
    response = requests.post(server.url + "/v1/publish", json=body, headers=tokens.bearer(tokens.publisher()), timeout=10)
    assert response.status_code == 202, response.text
    return response.json()


def pubsub_clients(redis_server: RedisServer) -> list[dict]:
    return [c for c in redis_server.client().client_list() if int(c.get("sub", 0)) + int(c.get("psub", 0)) > 0]


def drain_events(connections: dict[str, SSEConnection], seconds: float) -> dict[str, list]:
    got: dict[str, list] = {user: [] for user in connections}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for user, connection in connections.items():
            got[user].extend(event.json() for event in connection.events(0.01))
    return got


def test_targeted_and_broadcast_delivery_across_both_workers(stack) -> None:
    server, redis_server = stack
    users = [f"user{i}" for i in range(24)]
    connections = {user: connect(server, user) for user in users}
    try:
        # Both workers hold clients: each worker's one pub/sub connection has
        # more channels than its fixed two (broadcast + its probe).
        subscribers = pubsub_clients(redis_server)
        assert len(subscribers) == 2
        assert all(int(c["sub"]) > 2 for c in subscribers), subscribers
        assert sum(int(c["sub"]) - 2 for c in subscribers) == len(users)

        # Each user gets exactly their own message, nobody else's.
        batch = [{"user_id": user, "message": f"for {user}"} for user in users]
        result = publish(server, batch)
        assert all(item["receivers"] == 1 for item in result["published"]), "exactly one worker holds each user"
        got = drain_events(connections, 1.5)
        for user in users:
            assert [n["message"] for n in got[user]] == [f"for {user}"], user

        # A publish to a few users reaches exactly those.
        chosen = set(users[::5])
        publish(server, {"user_ids": sorted(chosen), "type": "order.shipped", "message": "Your order has shipped!"})
        got = drain_events(connections, 1.0)
        for user in users:
            expected = ["Your order has shipped!"] if user in chosen else []
            assert [n["message"] for n in got[user]] == expected, user

        # Broadcast reaches everybody, once.
        result = publish(server, {"broadcast": True, "message": "maintenance at noon"})
        assert result["published"][0]["receivers"] == 2, "both workers listen to broadcast"
        got = drain_events(connections, 1.0)
        assert all([n["message"] for n in got[user]] == ["maintenance at noon"] for user in users), got
    finally:
        for connection in connections.values():
            connection.close()


def test_one_pubsub_connection_per_worker_and_channels_released(stack) -> None:
    server, redis_server = stack
    client = redis_server.client()
    users = [f"many{i}" for i in range(200)]
    connections = [connect(server, user) for user in users]
    try:
        subscribers = pubsub_clients(redis_server)
        assert len(subscribers) == 2, f"expected one pub/sub connection per worker, got {subscribers}"
        channels = [f"notifier:user:{user}" for user in users]
        counts = dict(client.pubsub_numsub(*channels))
        assert all(counts[c.encode()] == 1 for c in channels)
    finally:
        for connection in connections:
            connection.close()
    # Gone clients are noticed within one heartbeat (0.5 s) and unsubscribed.
    started = time.monotonic()
    wait_until(lambda: all(n == 0 for _, n in client.pubsub_numsub(*channels)), 5, message="NUMSUB to fall to 0")
    assert time.monotonic() - started < 3
    assert len(pubsub_clients(redis_server)) == 2, "the workers' own connections stay"
    metrics = requests.get(server.url + "/metrics", timeout=5).text
    assert "notifier_streams_open 0.0" in metrics


def test_topic_subscription_and_publisher_receivers(stack) -> None:
    server, redis_server = stack
    alice = connect(server, "alice", topics=["orders:*"])
    bob = connect(server, "bob")
    try:
        response = get_refusal(server.url + "/v1/events?topic=orders:9", headers=tokens.bearer(tokens.token("bob")),
                               timeout=5)
        assert response.status_code == 403 and response.json()["error"]["code"] == "forbidden"
        alice.close()
        alice = SSEConnection(server.url + "/v1/events?topic=orders:9",
                              tokens.bearer(tokens.token("alice", topics=["orders:*"])))
        assert alice.status == 200, alice.read_body()
        alice.events(0.05)
        publish(server, {"topic": "orders:9", "message": "order 9 packed"})
        [event] = alice.collect(1, 3)
        assert event.json()["topic"] == "orders:9"
        assert bob.events(0.5) == []
    finally:
        alice.close()
        bob.close()


def test_a_client_that_leaves_is_unsubscribed_at_once_not_at_the_next_heartbeat() -> None:
    """With a 60 s heartbeat only the watch on each stream's socket can notice
    a closed client: its Redis channel must go within a couple of seconds."""
    redis_server = RedisServer().start()
    server = Gunicorn({"NOTIFIER_REDIS_URL": redis_server.url, "NOTIFIER_JWT_SECRET": tokens.SECRET,
                       "NOTIFIER_HEARTBEAT_SECONDS": "60"}, workers=2)
    opened: list[SSEConnection] = []
    try:
        server.start()
        users = [f"leaver{i}" for i in range(40)]
        connections = [connect(server, user) for user in users]
        stayer = connect(server, "stayer")
        opened = [*connections, stayer]
        channels = [f"notifier:user:{user}" for user in users]
        client = redis_server.client()
        assert all(n == 1 for _, n in client.pubsub_numsub(*channels))
        for connection in connections:
            connection.close()
        started = time.monotonic()
        wait_until(lambda: all(n == 0 for _, n in client.pubsub_numsub(*channels)), 10,
                   message="NUMSUB of the leavers' channels to fall to 0")
        assert time.monotonic() - started < 3
        # The one who stayed is untouched and still gets its events.
        publish(server, {"user_id": "stayer", "message": "still here"})
        wait_until(lambda: [e.json()["message"] for e in stayer.events(0.1)] == ["still here"], 5,
                   message="the stayer's event")
    finally:
        for connection in opened:
            connection.close()
        server.stop()
        redis_server.stop()
