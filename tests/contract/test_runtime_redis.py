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


# -- next_ready_pubsub_message: never waits; the subscriber waits on the socket itself ----------------------------

READY = [runtime.fast_next_ready_pubsub_message, runtime.public_next_ready_pubsub_message]


class GeventConnection(redis.Connection):
    """What a gevent worker's connections are (gevent sockets), without
    patching this test process: the fast path reads the OS socket under them."""

    def _connect(self) -> Any:
        import gevent.socket

        sock = gevent.socket.create_connection((self.host, self.port), timeout=self.socket_connect_timeout)
        sock.settimeout(self.socket_timeout)
        return sock


SOCKETS = {"gevent": GeventConnection, "plain": redis.Connection}  # plain: the fast path falls back to can_read


@pytest.fixture
def gevent_client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    pool = redis.ConnectionPool.from_url(redis_server.url, socket_timeout=5, connection_class=GeventConnection)
    connected = redis.Redis(connection_pool=pool)
    yield connected
    connected.close()
    pool.disconnect()


@pytest.fixture(params=sorted(SOCKETS))
def any_client(request: pytest.FixtureRequest, redis_server: RedisServer) -> Iterator[redis.Redis]:
    pool = redis.ConnectionPool.from_url(redis_server.url, socket_timeout=5, connection_class=SOCKETS[request.param])
    connected = redis.Redis(connection_pool=pool)
    yield connected
    connected.close()
    pool.disconnect()


def ready_messages(next_ready: Callable[..., Any], pubsub: Any, count: int, seconds: float = 5) -> list[Any]:
    """``count`` messages, waiting on the socket (as the session does) whenever
    ``next_ready`` says none is whole yet."""
    import gevent.select

    messages: list[Any] = []
    deadline = time.monotonic() + seconds
    while len(messages) < count and time.monotonic() < deadline:
        message = next_ready(pubsub)
        if message is None:
            gevent.select.select([runtime.connection_fileno(pubsub.connection)], [], [], 0.5)
            continue
        messages.append(message)
    return messages


@pytest.mark.parametrize("next_ready", READY, ids=names(READY))
def test_ready_messages_come_whole_and_in_order_and_none_means_nothing_whole_is_left(
        next_ready: Callable[..., Any], any_client: redis.Redis, prefix: str) -> None:
    pubsub = any_client.pubsub()
    assert next_ready(pubsub) is None, "not connected yet: nothing to read"
    pubsub.subscribe(prefix + "c")
    try:
        [confirmation] = ready_messages(next_ready, pubsub, 1)
        assert confirmation["type"] == "subscribe" and confirmation["channel"] == (prefix + "c").encode()
        big = bytes(range(256)) * 4096  # 1 MiB: many reads of the parser's 64 KiB buffer
        payloads = [b"%d" % i for i in range(200)] + [big] + [b"after"]
        sender = any_client.pipeline(transaction=False)
        for payload in payloads:
            sender.publish(prefix + "c", payload)
        sender.execute()
        received = ready_messages(next_ready, pubsub, len(payloads))
        assert [m["data"] for m in received] == payloads
        started = time.monotonic()
        assert next_ready(pubsub) is None
        assert time.monotonic() - started < 0.1, "never waits"
    finally:
        pubsub.close()


@pytest.mark.parametrize("sockets", sorted(SOCKETS))
@pytest.mark.parametrize("next_ready", READY, ids=names(READY))
def test_ready_messages_raise_when_redis_drops_the_connection(
        next_ready: Callable[..., Any], sockets: str, redis_server: RedisServer, client: redis.Redis,
        prefix: str) -> None:
    pool = redis.ConnectionPool.from_url(redis_server.url, socket_timeout=5, client_name=prefix + "sub",
                                         connection_class=SOCKETS[sockets])
    named = redis.Redis(connection_pool=pool)
    pubsub = named.pubsub()
    pubsub.subscribe(prefix + "gone")
    try:
        assert ready_messages(next_ready, pubsub, 1)[0]["type"] == "subscribe"
        kill_named(client, prefix + "sub")
        with pytest.raises((redis.ConnectionError, OSError)):
            ready_messages(next_ready, pubsub, 1, seconds=3)
    finally:
        pubsub.close()
        named.close()
        pool.disconnect()


def test_the_fast_ready_path_reads_the_os_socket_itself_under_gevent(gevent_client: redis.Redis, prefix: str) -> None:
    """Not redis-py's ``can_read``: it builds a poll per call (the cost this path removes)."""
    pubsub = gevent_client.pubsub()
    pubsub.subscribe(prefix + "c")
    try:
        assert ready_messages(runtime.fast_next_ready_pubsub_message, pubsub, 1)
        connection = pubsub.connection
        calls: list[str] = []
        connection.can_read = lambda *args, **kwargs: calls.append("can_read")  # type: ignore[method-assign]
        gevent_client.publish(prefix + "c", b"x")
        assert [m["data"] for m in ready_messages(runtime.fast_next_ready_pubsub_message, pubsub, 1)] == [b"x"]
        assert calls == []
    finally:
        pubsub.close()


SEND_COMMANDS = [runtime.fast_send_commands, runtime.public_send_commands]


@pytest.mark.parametrize("send_commands", SEND_COMMANDS, ids=names(SEND_COMMANDS))
@pytest.mark.parametrize("sockets", sorted(SOCKETS))
def test_several_commands_in_one_write_even_past_the_socket_buffer(
        send_commands: Callable[..., Any], sockets: str, redis_server: RedisServer, prefix: str) -> None:
    """A value larger than the socket buffer is sent only in part by one
    ``send``: the rest must follow, in order, before the next command."""
    pool = redis.ConnectionPool.from_url(redis_server.url, socket_timeout=5, connection_class=SOCKETS[sockets])
    connection = runtime.fast_new_connection(pool)
    try:
        connection.connect()
        big = bytes(range(256)) * 32768  # 8 MiB
        send_commands(connection, [("SET", prefix + "small", "s"), ("SET", prefix + "big", big),
                                   ("STRLEN", prefix + "big"), ("GET", prefix + "small")])
        assert [runtime.read_reply(connection) for _ in range(4)] == [b"OK", b"OK", len(big), b"s"]
        assert runtime.fast_send_and_read(connection, "GET", prefix + "big") == big
    finally:
        connection.disconnect()
        pool.disconnect()


@pytest.mark.parametrize("sockets", sorted(SOCKETS))
def test_none_from_the_ready_reader_means_nothing_whole_is_left(
        sockets: str, redis_server: RedisServer, prefix: str) -> None:
    """A reply redis-py keeps for itself (here a subscribe confirmation it is
    told to ignore) is not taken for "nothing left": the session would then
    wait on a socket with a whole message already in the parser."""
    pool = redis.ConnectionPool.from_url(redis_server.url, socket_timeout=5, connection_class=SOCKETS[sockets])
    client = redis.Redis(connection_pool=pool)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    try:
        pubsub.subscribe(prefix + "c")
        client.publish(prefix + "c", b"x")
        fd = runtime.connection_fileno(pubsub.connection)
        wait_until(lambda: select.select([fd], [], [], 0)[0] == [fd], 2, message="reply and message arrived")
        time.sleep(0.05)  # both are on the socket: one read takes them together
        message = runtime.fast_next_ready_pubsub_message(pubsub)
        assert message is not None and message["data"] == b"x"
    finally:
        pubsub.close()
        client.close()
        pool.disconnect()
