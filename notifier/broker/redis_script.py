"""One Lua script, run with as little client-side work as possible.

The publish script runs once per ``POST /v1/publish``, and through redis-py's
client and pool most of its client-side cost was overhead (bench/README.md):
the pool polled every connection it handed out (gevent's ``select.poll`` per
checkout), then retry and deprecation wrappers, then the reply callbacks.
``ScriptRunner`` keeps its own few connections (redis-py's ``Connection``,
so the same URL handling, TLS, auth and hiredis parser) and does per call
only: pack, send, read. Correctness rests on one rule: a connection goes back
to the idle list only after a complete reply was read; after any other
outcome it is disconnected.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Sequence
from typing import Any

import redis
from redis.exceptions import NoScriptError

from ..runtime.redis import connection_has_pending_bytes, new_connection, send_and_read


class ScriptRunner:
    def __init__(self, pool: redis.ConnectionPool, script: str, max_connections: int, wait_timeout: float | None):
        self.script = script
        self.sha = hashlib.sha1(script.encode("utf-8")).hexdigest()
        self._pool = pool
        self._idle: list[Any] = []
        self._all: list[Any] = []
        self._slots = _semaphore(max_connections)
        self._wait_timeout = wait_timeout

    def __call__(self, keys: Sequence[Any], args: Sequence[Any], head: Callable[[], Sequence[Any]] | None = None) -> Any:
        """EVALSHA (loading the script once if Redis does not know it). ``head()``
        gives arguments to put before ``args``, computed once a connection is
        checked out (for a deadline). Raises redis.RedisError; ResponseError
        for an error the script returned."""
        if not self._slots.acquire(timeout=self._wait_timeout):
            raise redis.ConnectionError("no Redis connection available for publishing")
        try:
            connection = self._checkout()
            try:
                reply = self._run(connection, keys, [*head(), *args] if head else args)
            except redis.ResponseError:
                self._idle.append(connection)  # the error was the whole reply: still in step
                raise
            except BaseException:
                connection.disconnect()  # the reply may be half read: never reuse
                self._idle.append(connection)
                raise
            self._idle.append(connection)
            return reply
        finally:
            self._slots.release()

    def _run(self, connection: Any, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        try:
            return send_and_read(connection, "EVALSHA", self.sha, len(keys), *keys, *args)
        except NoScriptError:
            # A new or flushed Redis. EVAL sends the source once and caches it there.
            return send_and_read(connection, "EVAL", self.script, len(keys), *keys, *args)

    def _checkout(self) -> Any:
        try:
            connection = self._idle.pop()  # one step: another thread may take the last one (the Python publisher)
        except IndexError:
            pass
        else:
            if not _clean(connection):
                connection.disconnect()  # closed by Redis (restart, timeout) or holding stray bytes: send reconnects
            return connection
        connection = new_connection(self._pool)
        self._all.append(connection)  # at most max_connections: every connection comes back to _idle
        return connection

    def disconnect(self) -> None:
        for connection in self._all:
            connection.disconnect()


def _semaphore(size: int) -> Any:
    """gevent's compiled semaphore in a gevent worker (the patched
    ``threading`` one is Python built on a Condition: a few % of a publish),
    the standard one elsewhere (the Python publisher in a threaded app)."""
    try:
        from gevent import monkey
    except ImportError:  # pragma: no cover
        return threading.BoundedSemaphore(size)
    if monkey.is_module_patched("threading"):
        from gevent.lock import BoundedSemaphore

        return BoundedSemaphore(size)
    return threading.BoundedSemaphore(size)


def _clean(connection: Any) -> bool:
    """Connected, and nothing waiting to be read (no EOF, no stray reply)."""
    return not connection_has_pending_bytes(connection)
