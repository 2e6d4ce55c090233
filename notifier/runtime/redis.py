"""redis-py below its client: reading pub/sub messages off the connection,
and running one command on a connection of our own.

Read against redis-py 8.1 (``Connection.can_read``/``read_response(push_request=)``,
``PubSub.handle_message``, the hiredis parser's ``_reader``/``_sock``/``_buffer``, ``send_packed_command``/``pack_command``,
``ConnectionPool.connection_class``/``connection_kwargs``, ``Connection._sock``). Outside the tested
range each function takes redis-py's public path, correct but slower, as its
docstring says.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Sequence
from typing import Any

import redis

from ..sockets import peek
from .gevent import os_socket
from .versions import Tested

_HiredisParser: Any
try:
    from redis._parsers.hiredis import NOT_ENOUGH_DATA, _HiredisParser
except ImportError:  # hiredis is optional, and the module moves between releases
    NOT_ENOUGH_DATA, _HiredisParser = None, None

TESTED = Tested("redis", "8.1", "8.2")
ACTIVE = TESTED.active

Message = dict[str, Any]


def fast_next_ready_pubsub_message(pubsub: redis.client.PubSub) -> Message | None:
    """The next pub/sub message that is whole now, in the parser or on the
    socket; None only when none is. Never waits: the first part of a message
    stays in the parser for the next call, so wait for the socket before
    calling again.

    With hiredis on a plain socket it feeds the parser from non-blocking
    reads of the OS socket. ``can_read(0)`` builds a poll object, runs a turn
    of gevent's loop and peeks at the socket on every call, which cost more
    than the read itself at one message per wake-up (bench/README.md).
    Otherwise: ``can_read(0)`` and ``read_response`` while there is something
    to read (the rest of a begun message then gets the socket timeout).

    Not ``pubsub.get_message(0)`` (the public path): under load messages
    straddle reads, get_message then raises TimeoutError, and redis-py 8 has
    already reconnected the connection behind our back before raising (its
    retry calls the failure handler first, even with no retries allowed),
    losing whatever was in flight. Here any error ends the caller's session,
    so it reconnects and catches up.
    """
    connection = pubsub.connection
    if connection is None:
        return None
    parser = getattr(connection, "_parser", None)
    reader = getattr(parser, "_reader", None)
    raw = _plain_os_socket(connection, getattr(parser, "_sock", None))
    if _HiredisParser is None or not isinstance(parser, _HiredisParser) or reader is None or raw is None:
        while connection.can_read(timeout=0):
            fallback: Message | None = pubsub.handle_message(connection.read_response(push_request=True))
            if fallback is not None:
                return fallback
        return None
    buffer = parser._buffer
    push_type = getattr(parser, "_hiredis_PushNotificationType", None)
    # An error ends the caller's session, whose close() disconnects (as
    # read_response would have).
    while True:
        response = reader.gets()
        while response is NOT_ENOUGH_DATA:
            try:
                received = raw.recv_into(buffer)
            except (BlockingIOError, InterruptedError):
                return None
            except OSError as error:
                raise redis.ConnectionError(f"Error while reading from the pub/sub socket: {error}") from error
            if received == 0:
                raise redis.ConnectionError("Connection closed by server.")
            reader.feed(buffer, 0, received)
            response = reader.gets()
        if isinstance(response, Exception):
            raise response
        # RESP3 sends pub/sub messages as pushes: as read_response(push_request=True).
        if push_type is not None and isinstance(response, push_type):
            response = parser.handle_push_response(response)
        if connection.health_check_interval:
            connection.next_health_check = time.monotonic() + connection.health_check_interval
        message: Message | None = pubsub.handle_message(response)
        if message is not None:  # None: a reply redis-py kept for itself; read on
            return message


def public_next_ready_pubsub_message(pubsub: redis.client.PubSub) -> Message | None:
    """``get_message(timeout=0)``: a message that straddles reads raises
    TimeoutError (the caller's session ends, reconnects and catches up)."""
    if pubsub.connection is None:
        return None
    message: Message | None = pubsub.get_message(timeout=0)
    return message


def _plain_os_socket(connection: Any, sock: Any) -> Any:
    """The OS socket under a connection's gevent socket; None under TLS (its
    bytes must go through the TLS layer) or when there is no OS socket to
    read without blocking the loop."""
    if sock is None or isinstance(connection, redis.SSLConnection) or isinstance(sock, ssl.SSLSocket):
        return None
    raw = os_socket(sock)
    return None if raw is sock else raw


def fast_new_connection(pool: redis.ConnectionPool) -> Any:
    """A connection built like the pool's (URL, TLS, auth, parser) but owned by
    the caller: it does not count against the pool's limit."""
    return pool.connection_class(**pool.connection_kwargs)


def public_new_connection(pool: redis.ConnectionPool) -> Any:
    """Checked out of the pool for good: it counts against the pool's limit."""
    return pool.get_connection()


def fast_send_and_read(connection: Any, *args: Any) -> Any:
    """One command and its reply (raw: no response callbacks). Raises
    redis.RedisError; ResponseError when the reply is an error."""
    connection.send_packed_command(connection.pack_command(*args), check_health=False)
    return connection.read_response()


def public_send_and_read(connection: Any, *args: Any) -> Any:
    connection.send_command(*args)
    return connection.read_response()


def fast_send_commands(connection: Any, commands: Sequence[Sequence[Any]]) -> None:
    """Several commands in one write (their replies are read one by one with
    ``read_reply``). On a connected plain socket the write is one ``send`` on
    the OS socket: redis-py's ``sendall`` per packed part goes through
    gevent's ``sendall``, which asks the kernel for the buffer size first
    (bench/README.md). What one ``send`` leaves goes the usual way."""
    packed: list[Any] = []
    for command in commands:
        packed += connection.pack_command(*command)
    raw = _plain_os_socket(connection, getattr(connection, "_sock", None))
    if raw is None:
        connection.send_packed_command(packed, check_health=False)
        return
    data = b"".join(packed)
    try:
        sent = raw.send(data)
    except (BlockingIOError, InterruptedError):
        sent = 0
    except OSError as error:
        connection.disconnect()
        raise redis.ConnectionError(f"Error while writing to socket: {error}") from error
    if sent < len(data):
        connection.send_packed_command([memoryview(data)[sent:]], check_health=False)


def public_send_commands(connection: Any, commands: Sequence[Sequence[Any]]) -> None:
    for command in commands:
        connection.send_command(*command)


def read_reply(connection: Any) -> Any:
    """The next reply on ``connection`` (raw: no response callbacks). Raises
    redis.RedisError; ResponseError when the reply is an error."""
    return connection.read_response()


def fast_has_pending_bytes(connection: Any) -> bool:
    """True when a connected connection holds bytes to read (a stray reply, or
    EOF from a Redis that closed it): it must be reconnected before reuse.
    Never blocks; False when not connected yet (sending connects)."""
    sock = getattr(connection, "_sock", None)
    if sock is None:
        return False
    if isinstance(connection, redis.SSLConnection) or isinstance(sock, ssl.SSLSocket):
        # TLS may hold records (session tickets) that are not Redis bytes, and
        # under gevent the socket inside the TLS wrapper is plain TCP: ask redis-py.
        return public_has_pending_bytes(connection)
    return peek(os_socket(sock)) is not None


def public_has_pending_bytes(connection: Any) -> bool:
    """What redis-py's pool asks of a connection it hands out (it connects one
    that is not connected yet)."""
    try:
        return bool(connection.can_read())
    except (redis.ConnectionError, OSError):
        return True


def fast_connection_fileno(connection: Any) -> int | None:
    """The descriptor of a connected connection's socket (to wait on it with
    other descriptors). Raises OSError when not connected."""
    sock = getattr(connection, "_sock", None)
    if sock is None:
        raise OSError("not connected")
    return int(sock.fileno())


def public_connection_fileno(connection: Any) -> int | None:
    """redis-py has no public way to it: None, and the caller waits another
    way (polling ``can_read`` with a short timeout)."""
    return None


def socket_timeout(client: redis.Redis) -> float | None:
    """The client's socket timeout (public: ``get_connection_kwargs``)."""
    value = client.get_connection_kwargs().get("socket_timeout")
    return None if value is None else float(value)


def fast_cluster_slot_owner(cluster: Any, slot: int) -> Any:
    """The master serving ``slot`` in redis-py's cached slot map (None: unknown)."""
    return cluster.nodes_manager.get_node_from_slot(slot)


def public_cluster_slot_owner(cluster: Any, slot: int) -> Any:
    """Asks a node with CLUSTER SLOTS (a round trip: only off the tested release)."""
    # redis-py answers CLUSTER SLOTS as {(start, end): {"primary": (host, port), ...}}.
    reply = cluster.cluster_slots(target_nodes=cluster.get_random_node())
    for (start, end), owners in reply.items():
        if int(start) <= slot <= int(end):
            host, port = owners["primary"][0], owners["primary"][1]
            return cluster.get_node(host=host.decode() if isinstance(host, bytes) else str(host), port=int(port))
    return None


def fast_refresh_slot_map(cluster: Any) -> None:
    """Read the slot map again now (after MOVED, a failover, a lost shard)."""
    cluster.nodes_manager.initialize()


def public_refresh_slot_map(cluster: Any) -> None:
    """No public way: redis-py refreshes by itself on the next MOVED it meets."""


next_ready_pubsub_message = fast_next_ready_pubsub_message if ACTIVE else public_next_ready_pubsub_message
new_connection = fast_new_connection if ACTIVE else public_new_connection
send_and_read = fast_send_and_read if ACTIVE else public_send_and_read
connection_has_pending_bytes = fast_has_pending_bytes if ACTIVE else public_has_pending_bytes
send_commands = fast_send_commands if ACTIVE else public_send_commands
cluster_slot_owner = fast_cluster_slot_owner if ACTIVE else public_cluster_slot_owner
refresh_slot_map = fast_refresh_slot_map if ACTIVE else public_refresh_slot_map
connection_fileno = fast_connection_fileno if ACTIVE else public_connection_fileno
