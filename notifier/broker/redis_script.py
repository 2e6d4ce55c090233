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

from ..runtime.redis import connection_has_pending_bytes, new_connection, read_reply, send_commands


class NotReplicated(redis.ResponseError):
    """The script ran on the master, but fewer replicas than required
    acknowledged it within the WAIT timeout: a master lost now would lose it."""


class ScriptRunner:
    def __init__(self, pool: redis.ConnectionPool, script: str, max_connections: int, wait_timeout: float | None,
                 min_replicas: int = 0, replica_timeout_ms: int = 0):
        self.script = script
        # WAIT cannot run inside a script: it is sent right behind it, in the same write.
        self._wait = ("WAIT", min_replicas, replica_timeout_ms) if min_replicas else None
        self.sha = hashlib.sha1(script.encode("utf-8")).hexdigest()
        self._pool = pool
        self._idle: list[Any] = []
        self._all: list[Any] = []
        self._slots = _semaphore(max_connections)
        self._wait_timeout = wait_timeout

    def __call__(self, keys: Sequence[Any], args: Sequence[Any], head: Callable[[], Sequence[Any]] | None = None,
                 asking: bool = False) -> Any:
        """EVALSHA (loading the script once if Redis does not know it). ``head()``
        gives arguments to put before ``args``, computed once a connection is
        checked out (for a deadline). Raises redis.RedisError; ResponseError
        for an error the script returned. ``asking``: a Cluster ASK redirection
        is being followed (ASKING goes first, in the same write)."""
        if not self._slots.acquire(timeout=self._wait_timeout):
            raise redis.ConnectionError("no Redis connection available for publishing")
        try:
            connection = self._checkout()
            try:
                reply = self._run(connection, keys, [*head(), *args] if head else args, asking)
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

    def _run(self, connection: Any, keys: Sequence[Any], args: Sequence[Any], asking: bool = False) -> Any:
        try:
            return self._send(connection, ("EVALSHA", self.sha, len(keys), *keys, *args), asking)
        except NoScriptError:
            # A new or flushed Redis. EVAL sends the source once and caches it there.
            return self._send(connection, ("EVAL", self.script, len(keys), *keys, *args), asking)

    def _send(self, connection: Any, command: Sequence[Any], asking: bool = False) -> Any:
        """The script, then (with min_replicas) WAIT, in one write; every reply
        is read before anything is raised, so the connection stays in step."""
        commands: list[tuple[Any, ...]] = [("ASKING",)] if asking else []
        commands.append(tuple(command))
        if self._wait is not None:
            commands.append(self._wait)
        send_commands(connection, commands)
        if asking:
            read_reply(connection)
        try:
            reply = read_reply(connection)
        except redis.ResponseError:
            if self._wait is not None:
                read_reply(connection)
            raise
        if self._wait is not None:
            replicas = int(read_reply(connection))
            if replicas < self._wait[1]:
                raise NotReplicated(f"NOTREPLICATED the event reached {replicas} of {self._wait[1]} replicas in time")
        return reply

    def _checkout(self) -> Any:
        try:
            connection = self._idle.pop()  # one step: another thread may take the last one (the Python publisher)
        except IndexError:
            pass
        else:
            if not _clean(connection):
                connection.disconnect()  # closed by Redis (restart, timeout) or holding stray bytes
            return self._connected(connection)
        connection = new_connection(self._pool)
        self._all.append(connection)  # at most max_connections: every connection comes back to _idle
        return self._connected(connection)

    def _connected(self, connection: Any) -> Any:
        """connect() explicitly: send_packed_command would connect by itself,
        but past a Sentinel-managed connection's own connect() (which asks the
        sentinels for the master), to the default localhost:6379."""
        try:
            connection.connect()  # returns at once when connected
        except BaseException:
            self._idle.append(connection)  # not connected: the next checkout tries again
            raise
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
