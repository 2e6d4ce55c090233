"""A look at a socket that never blocks and never consumes anything."""

from __future__ import annotations

import socket
from typing import Any


def peek(raw_socket: Any) -> bytes | None:
    """What a non-blocking peek sees: None when there is nothing to read, b""
    when the peer has closed (or the socket failed), else the first byte.

    ``raw_socket`` is an OS-level socket (under gevent, the one inside its
    wrapper). A socket with a timeout would wait for data despite
    MSG_DONTWAIT (CPython polls on EAGAIN), so the timeout is lifted around
    the call; gevent's and gunicorn's sockets have none, and pay nothing.
    """
    timeout = raw_socket.gettimeout()
    try:
        if timeout != 0.0:
            raw_socket.settimeout(0.0)
        return bytes(raw_socket.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except (BlockingIOError, InterruptedError):
        return None
    except OSError:
        return b""
    finally:
        if timeout != 0.0:
            try:
                raw_socket.settimeout(timeout)
            except OSError:
                pass
