"""The SSE response body: a generator held by one greenlet per client.

Every stream has a heartbeat, a deadline and a ``finally``:

- the first chunk (``retry:`` and a comment) goes out at once, so proxies and
  the browser see the stream open before the first event;
- a client that closes its connection is noticed at once: while the
  stream waits, the event loop watches its socket, which turns readable
  when the peer closes (an SSE client sends nothing after its request), and
  a non-blocking peek tells EOF from data. Unsubscribed and freed at once
  rather than at the next write: under churn, streams of gone clients were
  most of a worker's memory (bench/README.md);
- a heartbeat comment after every ``heartbeat`` seconds of silence, with the
  same peek before it, for a client that sent something after all (its
  watch is then off);
- the stream ends at its deadline (token expiry, or a jittered maximum age so
  reconnects spread out), on shutdown, or on eviction;
- ``finally`` calls ``hooks.finish`` however the generator ends (the server
  calls ``close()`` when a write fails), which leaves the core; from its first
  step on (``hooks.on_start``), nothing else need watch for that.
"""

from __future__ import annotations

import logging
import math
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from gevent.event import Event

from .events import Delivery, comment, retry
from .hub import CloseReason, Subscription
from .runtime import gunicorn as gunicorn_runtime
from .runtime.gevent import Watcher, os_socket, watch_readable
from .sockets import peek

log = logging.getLogger("notifier.stream")

SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # nginx: do not buffer this response
}


def client_socket(environ: dict[str, Any]) -> Any:
    """The raw client socket where the server exposes it (gunicorn does), or None."""
    sock = gunicorn_runtime.client_socket(environ)
    return None if sock is None else os_socket(sock)


def client_gone(raw_socket: Any) -> bool:
    """True when the peer has closed its side. Never blocks.

    An SSE client sends nothing after its request, so a readable socket with
    no data means EOF.
    """
    return raw_socket is not None and peek(raw_socket) == b""


def shutdown_socket(raw_socket: Any) -> None:
    """Wake a greenlet blocked writing to a client that stopped reading."""
    if raw_socket is None:
        return
    try:
        raw_socket.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class StreamHooks(Protocol):
    def on_start(self) -> None:
        """Called when the server starts the body: ``finish`` will be called."""

    def on_write(self, items: list[Delivery]) -> None:
        """Called after each write of queued events."""

    def finish(self, reason: str, sent: int) -> None:
        """Detach the subscription and record the end. Idempotent."""


# Slotted: a stream's objects are walked by every full garbage collection.
@dataclass(slots=True)
class StreamPlan:
    subscription: Subscription
    heartbeat: float
    deadline: float  # time.monotonic() value
    deadline_reason: str
    retry_ms: int
    opening: bytes = b""  # replayed events or a reset, sent with the first chunk
    raw_socket: Any = None
    # The bytes each event is sent as, when not its shared frame (compat.flask_sse).
    reframe: Callable[[Delivery], bytes] | None = None


class PeerWatch:
    """Wakes a waiting stream when its client's socket turns readable.

    An event-loop watcher of our own on the socket's descriptor (gunicorn is not
    reading it while the response runs). It fires once and stops: readable
    with data rather than EOF (a client that sent something) would otherwise
    fire on every turn of the loop; the heartbeat's peek covers that client.
    """

    __slots__ = ("fired", "io", "wakeup")

    def __init__(self, raw_socket: Any, wakeup: Event):
        self.fired = False
        self.wakeup = wakeup
        # None where gevent offers no such watcher (runtime/gevent.py).
        self.io: Watcher | None = watch_readable(raw_socket.fileno(), self._readable)

    def _readable(self) -> None:
        if self.io is not None:
            self.io.stop()
        self.fired = True
        self.wakeup.set()

    def close(self) -> None:
        # Before the server closes the descriptor; stop() also drops the
        # callback, so the watcher and this object do not keep each other.
        if self.io is not None:
            self.io.stop()
            self.io.close()


def watch_peer(plan: StreamPlan) -> PeerWatch | None:
    if plan.raw_socket is None:
        return None
    try:
        watch = PeerWatch(plan.raw_socket, plan.subscription.wakeup)
    except (OSError, ValueError):  # a closed descriptor: the heartbeat's peek will tell
        return None
    return watch if watch.io is not None else None


def event_stream(plan: StreamPlan, hooks: StreamHooks) -> Iterator[bytes]:
    sub = plan.subscription
    reason = CloseReason.CLIENT_GONE
    sent = 0
    watch: PeerWatch | None = None
    # Every yield below is a write that may block on a client that stopped
    # reading: ``writing_since`` lets the hub's alarm clock cut it at the
    # deadline or after the write timeout.
    sub.deadline, sub.deadline_reason = plan.deadline, plan.deadline_reason
    try:
        hooks.on_start()
        sub.writing_since = time.monotonic()
        yield retry(plan.retry_ms) + comment("connected") + plan.opening
        sub.writing_since = math.inf
        watch = watch_peer(plan)
        next_heartbeat = time.monotonic() + plan.heartbeat
        while True:
            if sub.closed is not None:
                reason = sub.closed
                if sub.farewell:
                    sub.writing_since = time.monotonic()
                    yield sub.farewell
                break
            now = time.monotonic()
            if now >= plan.deadline:
                reason = plan.deadline_reason
                break
            if now >= next_heartbeat:
                if client_gone(plan.raw_socket):
                    reason = CloseReason.CLIENT_GONE
                    break
                sub.writing_since = now
                yield b":\n\n"
                sub.writing_since = math.inf
                next_heartbeat = time.monotonic() + plan.heartbeat
                continue
            sub.sleep_until(min(next_heartbeat, plan.deadline))
            items = sub.take()
            if items:
                sub.writing_since = time.monotonic()
                if plan.reframe is None:
                    yield b"".join([item.frame for item in items])
                else:
                    yield b"".join([plan.reframe(item) for item in items])
                sub.writing_since = math.inf
                sent += len(items)
                hooks.on_write(items)
                next_heartbeat = time.monotonic() + plan.heartbeat
            # Also after a write: the peer may have gone while it ran (a write
            # to a closed peer still succeeds once), with more already queued.
            if watch is not None and watch.fired:
                watch.fired = False
                if client_gone(plan.raw_socket):
                    reason = CloseReason.CLIENT_GONE
                    break
    except GeneratorExit:
        # An evicted stream's socket is shut down under a blocked write, which
        # ends here too: keep the reason the subscription was closed for.
        reason = sub.closed or CloseReason.CLIENT_GONE
        raise
    except Exception:
        reason = CloseReason.ERROR
        log.exception("stream failed")
        raise
    finally:
        try:
            if watch is not None:
                watch.close()
        finally:
            hooks.finish(reason, sent)
