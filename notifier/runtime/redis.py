"""redis-py internals, in one place (placeholder; see the arch-runtime branch)."""

from __future__ import annotations

from typing import Any


def connection_fileno(connection: Any) -> int:
    """The descriptor of a connected redis-py connection's socket."""
    sock = connection._sock
    if sock is None:
        raise OSError("not connected")
    return int(sock.fileno())


def next_pubsub_message(pubsub: Any, timeout: float) -> dict[str, Any] | None:
    """The next pub/sub message, waiting up to ``timeout`` for one to start.

    Not ``pubsub.get_message(timeout)``: that gives the whole message only
    ``timeout`` to arrive, and under load messages routinely straddle reads
    (with timeout 0 it fails at once). It then raises TimeoutError, and
    redis-py 8 has already reconnected the connection behind our back, before
    raising, losing whatever was in flight. Here the wait for the first byte
    is ``timeout``; the rest of a begun message gets the socket timeout; and
    any error ends the session, so the broker reconnects and catches up from
    history.
    """
    connection = pubsub.connection
    if connection is None or not connection.can_read(timeout=timeout):
        return None
    message: dict[str, Any] | None = pubsub.handle_message(connection.read_response(push_request=True))
    return message
