"""notifier/runtime/redis.py against a real redis-server: the internal path
and its public fallback give the same results."""

from __future__ import annotations

import select
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from notifier.runtime import redis as runtime

from ..support.processes import RedisServer, wait_until

NEXT = [runtime.fast_next_pubsub_message, runtime.public_next_pubsub_message]
NEW = [runtime.fast_new_connection, runtime.public_new_connection]
SEND = [runtime.fast_send_and_read, runtime.public_send_and_read]
PENDING = [runtime.fast_has_pending_bytes, runtime.public_has_pending_bytes]


def names(functions: list[Callable[..., Any]]) -> list[str]:
    return [function.__name__.split("_", 1)[0] for function in functions]


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    pool = redis.ConnectionPool.from_url(redis_server.url, socket_timeout=5, max_connections=4)
    connected = redis.Redis(connection_pool=pool)
    yield connected
    connected.close()
    pool.disconnect()


def kill_named(client: redis.Redis, name: str) -> None:
    for entry in client.client_list():
        if entry.get("name") == name:
            client.execute_command("CLIENT", "KILL", "ID", entry["id"])


def next_message(next_pubsub_message: Callable[..., Any], pubsub: Any, seconds: float = 2) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        message = next_pubsub_message(pubsub, 0.1)
        if message is not None:
            return message
    return None


@pytest.mark.parametrize("next_pubsub_message", NEXT, ids=names(NEXT))
def test_next_pubsub_message_reads_confirmations_and_messages_and_waits_at_most_timeout(
        next_pubsub_message: Callable[..., Any], client: redis.Redis, prefix: str) -> None:
    pubsub = client.pubsub()
    assert next_pubsub_message(pubsub, 0.05) is None, "not connected yet: nothing to read"
    pubsub.subscribe(prefix + "c")
    try:
        confirmation = next_message(next_pubsub_message, pubsub)
        assert confirmation["type"] == "subscribe" and confirmation["channel"] == (prefix + "c").encode()
        started = time.monotonic()
        assert next_pubsub_message(pubsub, 0.2) is None
        assert 0.15 <= time.monotonic() - started < 1.5
        client.publish(prefix + "c", b"x" * 100_000)  # more than one read
        message = next_message(next_pubsub_message, pubsub)
        assert message["type"] == "message" and message["data"] == b"x" * 100_000
    finally:
        pubsub.close()


@pytest.mark.parametrize("next_pubsub_message", NEXT, ids=names(NEXT))
def test_next_pubsub_message_raises_when_redis_drops_the_connection(
        next_pubsub_message: Callable[..., Any], redis_server: RedisServer, client: redis.Redis, prefix: str) -> None:
    named = redis.Redis.from_url(redis_server.url, socket_timeout=5, client_name=prefix + "sub")
    pubsub = named.pubsub()
    pubsub.subscribe(prefix + "gone")
    try:
        assert next_message(next_pubsub_message, pubsub)["type"] == "subscribe"
        kill_named(client, prefix + "sub")
        with pytest.raises((redis.ConnectionError, OSError)):
            for _ in range(50):
                next_pubsub_message(pubsub, 0.1)
    finally:
        pubsub.close()
        named.close()


@pytest.mark.parametrize("send_and_read", SEND, ids=names(SEND))
@pytest.mark.parametrize("new_connection", NEW, ids=names(NEW))
def test_a_connection_of_our_own_runs_commands_and_scripts(
        new_connection: Callable[..., Any], send_and_read: Callable[..., Any], client: redis.Redis, prefix: str) -> None:
    connection = new_connection(client.connection_pool)
    try:
        assert send_and_read(connection, "SET", prefix + "k", "v") == b"OK"
        assert send_and_read(connection, "GET", prefix + "k") == b"v"
        assert send_and_read(connection, "EVAL", "return ARGV[1]", 0, "seven") == b"seven"
        with pytest.raises(redis.exceptions.NoScriptError):
            send_and_read(connection, "EVALSHA", "0" * 40, 0)
        with pytest.raises(redis.ResponseError):
            send_and_read(connection, "INCR", prefix + "k")
        assert send_and_read(connection, "PING") == b"PONG", "still in step after error replies"
    finally:
        connection.disconnect()


def test_our_own_connections_do_not_count_against_the_pool(client: redis.Redis) -> None:
    pool = client.connection_pool
    connections = [runtime.fast_new_connection(pool) for _ in range(6)]  # the pool allows 4
    try:
        assert all(runtime.fast_send_and_read(connection, "PING") == b"PONG" for connection in connections)
        assert client.ping()
    finally:
        for connection in connections:
            connection.disconnect()


@pytest.mark.parametrize("has_pending_bytes", PENDING, ids=names(PENDING))
def test_pending_bytes_a_stray_reply_or_a_closed_connection(
        has_pending_bytes: Callable[..., Any], client: redis.Redis, redis_server: RedisServer) -> None:
    connection = runtime.fast_new_connection(client.connection_pool)
    try:
        assert not has_pending_bytes(connection)  # not connected: sending connects
        assert runtime.fast_send_and_read(connection, "PING") == b"PONG"
        assert not has_pending_bytes(connection)
        connection.send_command("PING")  # a reply nobody read
        wait_until(lambda: has_pending_bytes(connection), 2, message="stray reply seen")
        connection.read_response()
        assert not has_pending_bytes(connection)
        own_id = runtime.fast_send_and_read(connection, "CLIENT", "ID")
        redis_server.client().execute_command("CLIENT", "KILL", "ID", own_id)
        wait_until(lambda: has_pending_bytes(connection), 2, message="EOF seen")
    finally:
        connection.disconnect()


def test_socket_timeout_is_the_clients(client: redis.Redis, redis_server: RedisServer) -> None:
    assert runtime.socket_timeout(client) == 5.0
    assert runtime.socket_timeout(redis.Redis.from_url(redis_server.url)) is None


def test_the_descriptor_of_a_connected_connection(client: redis.Redis) -> None:
    connection = runtime.fast_new_connection(client.connection_pool)
    try:
        with pytest.raises(OSError):
            runtime.connection_fileno(connection)
        runtime.fast_send_and_read(connection, "PING")
        fd = runtime.connection_fileno(connection)
        assert fd is not None and fd >= 0 and select.select([fd], [], [], 0)[0] == []
        connection.send_command("PING")
        assert select.select([fd], [], [], 2)[0] == [fd]
        assert runtime.public_connection_fileno(connection) is None, "no public way: the session polls instead"
    finally:
        connection.disconnect()


def test_the_slot_owner_from_the_cached_map_matches_the_one_a_node_reports(redis_cluster) -> None:
    """The fast path reads redis-py's slot map; the fallback asks CLUSTER SLOTS."""
    from redis.crc import key_slot

    from notifier.broker.redis_connect import make_cluster_client

    cluster = make_cluster_client(redis_cluster.url, 2)
    try:
        for key in ("a", "b", "notifier:{user:alice}", "zz-top"):
            slot = key_slot(key.encode())
            fast, public = runtime.fast_cluster_slot_owner(cluster, slot), runtime.public_cluster_slot_owner(cluster, slot)
            assert fast is not None and public is not None and fast.name == public.name
        runtime.fast_refresh_slot_map(cluster)  # reads the map again without complaint
        runtime.public_refresh_slot_map(cluster)
        assert runtime.fast_cluster_slot_owner(cluster, 0) is not None
    finally:
        cluster.close()
