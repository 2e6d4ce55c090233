"""The floor: the least any server on notifier's stack (gunicorn with gevent
workers, Redis between the workers) must do, so that a gap to Nchan can be
split into what the stack costs and what notifier adds.

``python -m bench.run connect publish unicast --server floor`` serves ``app``
below with notifier's own ``gunicorn.conf.py`` (the same workers, worker
class, connection limit and write patch) and a Redis of its own
(``FLOOR_REDIS_URL``):

- ``GET /v1/events`` reads the user from the token without checking it,
  subscribes the worker's one pub/sub connection to that user's channel,
  answers the SSE headers and the first chunk notifier sends, then writes
  what arrives for the user, with a comment every 15 s;
- ``POST /v1/publish`` reads ``user_id`` from the JSON body and PUBLISHes the
  SSE block to that user's channel (one round trip), answering 202 with the
  event's id as notifier does.

No token check, no validation beyond finding the user, no history (Nchan
keeps none either in the bench's config), no Flask, no access line, no
metrics, no drain, no flow control: what is left is the HTTP server, the
greenlets and the Redis hop between workers. Without ``FLOOR_REDIS_URL`` it
subscribes to nothing and publishes nowhere (the floor of the first
measurements).
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import gevent
from gevent.lock import Semaphore
from gevent.queue import Empty, Queue

HEARTBEAT_SECONDS = 15.0
FIRST_CHUNK = b"retry: 3000\n\n: connected\n\n"  # what a notifier stream sends first
SSE_HEADERS = [("Content-Type", "text/event-stream; charset=utf-8"), ("Cache-Control", "no-cache"),
               ("X-Accel-Buffering", "no")]
CHANNEL_PREFIX = b"floor:user:"


class Relay:
    """One worker's pub/sub connection and its local streams, one queue per
    user (the bench opens one stream per user)."""

    def __init__(self, url: str) -> None:
        import redis

        self.client = redis.Redis.from_url(url)
        self.pubsub = self.client.pubsub()
        self.queues: dict[bytes, Queue[bytes]] = {}
        self.reader: gevent.Greenlet[Any, Any] | None = None
        # Connections of its own for PUBLISH: redis-py's pool polls each
        # connection it hands out, a cost notifier does not pay either.
        self.idle: list[Any] = []
        # redis-py's PubSub connects on its first command: two greenlets
        # subscribing at once would each make a connection.
        self.lock = Semaphore()

    def open(self, user: str) -> Queue[bytes]:
        channel = CHANNEL_PREFIX + user.encode()
        queue: Queue[bytes] = Queue()
        self.queues[channel] = queue
        with self.lock:
            self.pubsub.subscribe(channel)
        if self.reader is None:
            self.reader = gevent.spawn(self._read)
        return queue

    def close(self, user: str) -> None:
        channel = CHANNEL_PREFIX + user.encode()
        if self.queues.pop(channel, None) is not None:
            with self.lock:
                self.pubsub.unsubscribe(channel)

    def publish(self, user: str, block: bytes) -> None:
        pool = self.client.connection_pool
        connection = self.idle.pop() if self.idle else pool.connection_class(**pool.connection_kwargs)
        connection.send_command("PUBLISH", CHANNEL_PREFIX + user.encode(), block)
        connection.read_response()
        self.idle.append(connection)

    def _read(self) -> None:
        while True:
            message = self.pubsub.get_message(timeout=None)  # blocks: no poll per message
            if message is not None and message["type"] == "message":
                queue = self.queues.get(message["channel"])
                if queue is not None:
                    queue.put(message["data"])


_relay: Relay | None = None
_ids = itertools.count(1)


def relay() -> Relay | None:
    """The worker's relay, made in the worker (not in a preloading master)."""
    global _relay
    url = os.environ.get("FLOOR_REDIS_URL")
    if url and _relay is None:
        _relay = Relay(url)  # connects nothing yet: no greenlet switch, no race
    return _relay


def user_of(authorization: str | None) -> str:
    """The ``sub`` claim of a bearer token, read without checking the token."""
    payload = (authorization or "").rpartition(" ")[2].split(".")[1]
    return str(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["sub"])


def held(queue: Queue[bytes] | None, user: str) -> Iterator[bytes]:
    try:
        yield FIRST_CHUNK
        while True:
            if queue is None:
                gevent.sleep(HEARTBEAT_SECONDS)
                yield b":\n\n"
                continue
            try:
                yield queue.get(timeout=HEARTBEAT_SECONDS)
            except Empty:
                yield b":\n\n"
    finally:
        if _relay is not None:
            _relay.close(user)


def event_id() -> str:
    """Ordered per user across workers by time (as notifier's ids are by Redis's clock)."""
    # The pid is read here, not at import: a preloading master imports the app once for all workers.
    return f"{time.time_ns() // 1000}-{next(_ids) * 1000 + os.getpid() % 1000}"


def publish(environ: dict[str, Any]) -> bytes:
    body = environ["wsgi.input"].read()
    transport = relay()
    if transport is None:
        return b'{"published": []}'
    user = str(json.loads(body)["user_id"])
    identifier = event_id()
    transport.publish(user, b"id: %s\ndata: %s\n\n" % (identifier.encode(), body))
    return b'{"published": [{"id": "%s"}]}' % identifier.encode()


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    path, method = environ.get("PATH_INFO"), environ.get("REQUEST_METHOD")
    if path == "/v1/events" and method == "GET":
        user = user_of(environ.get("HTTP_AUTHORIZATION"))
        transport = relay()
        start_response("200 OK", SSE_HEADERS)
        return held(transport.open(user) if transport is not None else None, user)
    if path == "/v1/publish" and method == "POST":
        reply = publish(environ)
        start_response("202 Accepted", [("Content-Type", "application/json"), ("Content-Length", str(len(reply)))])
        return [reply]
    if path in ("/readyz", "/livez"):
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]
    start_response("404 Not Found", [("Content-Length", "0")])
    return []
