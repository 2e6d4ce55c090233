"""The load client: processes that each run one asyncio loop on raw sockets,
driven by the coordinator (``bench.run``) through a pipe.

- ``StreamAgent`` holds many SSE streams, each authenticated as its own user
  (an HS256 token minted here with PyJWT), and records for each event the id
  and the time it arrived (``time.time()``, the same clock the publisher
  stamps its requests with: one machine).
- ``PublisherAgent`` sends ``POST /v1/publish`` over a few keep-alive
  connections, open loop at a set rate or back to back, and records for each
  published event id the time its request was written.

Every wait is bounded: each command carries its own timeout, and a command
that outlives it is answered with what was done so far.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import resource
import time
import traceback
import uuid
from multiprocessing.connection import Connection
from typing import Any
from urllib.parse import urlsplit

import jwt

from .wire import NchanDecoder, ProtocolError, StreamDecoder

SERVERS = ("notifier", "nchan", "floor")  # the floor speaks notifier's URLs (bench/floor.py)
ACCEPTED = (201, 202)  # notifier answers 202; Nchan 201 (a subscriber had it) or 202 (none yet)


def raise_nofile(wanted: int) -> int:
    """Raise RLIMIT_NOFILE towards ``wanted`` (as far as the hard limit, or past it as root)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return soft
    new_hard = hard if hard == resource.RLIM_INFINITY or hard >= wanted else wanted
    for limits in ((wanted, new_hard), (min(wanted, hard), hard)):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, limits)
            break
        except (ValueError, OSError):
            continue
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def cpu_now() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def make_token(secret: str, sub: str, *, publisher: bool = False, ttl: int = 3 * 3600) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {"sub": sub, "iat": now, "nbf": now, "exp": now + ttl, "jti": uuid.uuid4().hex,
                              "type": "access", "fresh": False}
    if publisher:
        claims["role"] = "publisher"
    return jwt.encode(claims, secret, algorithm="HS256")


class Target:
    """Where the load goes: a notifier (``/v1/events``, ``/v1/publish``, JWTs)
    or an Nchan (``/sub/<user>``, ``/pub/<channel>``, no auth; see bench/nchan.py)."""

    def __init__(self, url: str, server: str = "notifier"):
        if server not in SERVERS:
            raise SystemExit(f"unknown server {server!r}")
        self.server = server
        self.nchan = server == "nchan"
        parts = urlsplit(url)
        if parts.scheme != "http":
            raise SystemExit("only http:// URLs (loopback) are supported")
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.base = parts.path.rstrip("/")
        self.host_header = parts.netloc


# --------------------------------------------------------------------------
# Streams
# --------------------------------------------------------------------------


class Stream(asyncio.Protocol):
    __slots__ = (
        "agent",
        "closed",
        "connected_at",
        "decoder",
        "error",
        "ids",
        "opened",
        "request",
        "started",
        "times",
        "transport",
        "user",
    )

    def __init__(self, agent: StreamAgent, user: str, request: bytes):
        self.agent = agent
        self.user = user
        self.request = request
        self.decoder = NchanDecoder() if agent.target.nchan else StreamDecoder()
        self.ids: list[bytes] = []
        self.times: list[float] = []
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = agent.loop.create_future()
        self.started = time.monotonic()
        self.connected_at = 0.0
        self.closed = False
        self.error: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        now = time.time()
        try:
            ids = self.decoder.feed(data)
        except (ProtocolError, ValueError) as exc:
            self._fail(f"protocol: {exc}")
            return
        if ids:
            self.ids.extend(ids)
            self.times.extend([now] * len(ids))
            self.agent.received += len(ids)
        if not self.opened.done() and self.decoder.headers_done:
            if self.decoder.status != 200:
                self._fail(f"status {self.decoder.status}")
            elif self.decoder.comments or ids:  # the first chunk (retry + ": connected")
                self.connected_at = time.monotonic()
                self.opened.set_result(None)

    def _fail(self, why: str) -> None:
        self.error = why
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(why))
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(f"closed before the first chunk: {exc!r}"))
        elif not self.agent.closing and self.error is None:
            self.error = f"closed by server: {exc!r}" if exc else "closed by server"


class Agent:
    """One process, one asyncio loop, commands over a pipe (one at a time)."""

    def __init__(self, conn: Connection, url: str, secret: str | None, server: str = "notifier"):
        self.conn = conn
        self.target = Target(url, server)
        self.secret = secret
        self.loop = asyncio.get_running_loop()
        self.done: asyncio.Future[None] = self.loop.create_future()

    async def serve(self) -> None:
        self.loop.add_reader(self.conn.fileno(), self._on_command)
        await self.done

    def _on_command(self) -> None:
        # uvloop makes a watched fd non-blocking; the pipe must stay blocking
        # so that a large message is read and written whole.
        os.set_blocking(self.conn.fileno(), True)
        try:
            name, args = self.conn.recv()
        except EOFError:
            if not self.done.done():
                self.done.set_result(None)
            return
        if name == "stop":
            self.conn.send({"ok": True})
            self.done.set_result(None)
            return
        self.loop.create_task(self._run(name, args))

    async def _run(self, name: str, args: dict[str, Any]) -> None:
        started_cpu = cpu_now()
        try:
            result = await getattr(self, "cmd_" + name)(**args)
        except Exception as exc:  # noqa: BLE001 - reported to the coordinator
            result = {"error": f"{exc.__class__.__name__}: {exc}", "trace": traceback.format_exc()}
        result["cpu_s"] = cpu_now() - started_cpu
        result["pid"] = os.getpid()
        os.set_blocking(self.conn.fileno(), True)
        self.conn.send(result)

    async def cmd_cpu(self) -> dict[str, Any]:
        return {"cpu_total_s": cpu_now()}


class StreamAgent(Agent):
    def __init__(self, conn: Connection, url: str, secret: str | None, server: str = "notifier"):
        super().__init__(conn, url, secret, server)
        self.streams: list[Stream] = []
        self.received = 0
        self.closing = False

    def _request(self, user: str, token: str) -> bytes:
        if self.target.nchan:
            return (f"GET {self.target.base}/sub/{user} HTTP/1.1\r\nHost: {self.target.host_header}\r\n"
                    f"Accept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n").encode("latin-1")
        return (f"GET {self.target.base}/v1/events HTTP/1.1\r\nHost: {self.target.host_header}\r\n"
                f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n"
                ).encode("latin-1")

    async def cmd_open(self, users: list[str], concurrency: int, timeout: float,
                       tokens: dict[str, str] | None = None) -> dict[str, Any]:
        """Open one stream per user, ``concurrency`` handshakes in flight at most."""
        semaphore = asyncio.Semaphore(concurrency)
        errors: dict[str, int] = {}
        connect_times: list[float] = []
        deadline = time.monotonic() + timeout
        requests = [(user, self._request(user, "" if self.target.nchan else tokens[user] if tokens
                                         else make_token(self.secret or "", user)))
                    for user in users]

        async def one(user: str, request: bytes) -> None:
            async with semaphore:
                left = deadline - time.monotonic()
                if left <= 0:
                    errors["timeout"] = errors.get("timeout", 0) + 1
                    return
                stream = Stream(self, user, request)
                try:
                    await asyncio.wait_for(self.loop.create_connection(
                        lambda: stream, self.target.host, self.target.port), left)
                    await asyncio.wait_for(stream.opened, max(0.01, deadline - time.monotonic()))
                except (OSError, ConnectionError, asyncio.TimeoutError) as exc:
                    key = exc.__class__.__name__ + (f": {exc}" if isinstance(exc, ConnectionError) else "")
                    errors[key[:120]] = errors.get(key[:120], 0) + 1
                    if stream.transport is not None:
                        stream.transport.abort()
                    return
                connect_times.append(stream.connected_at - stream.started)
                self.streams.append(stream)

        started = time.monotonic()
        await asyncio.gather(*(one(user, request) for user, request in requests))
        return {"opened": len(connect_times), "errors": errors, "elapsed_s": time.monotonic() - started,
                "connect_times": connect_times}

    async def cmd_progress(self) -> dict[str, Any]:
        alive = sum(1 for s in self.streams if not s.closed)
        errors: dict[str, int] = {}
        for stream in self.streams:
            if stream.error:
                errors[stream.error[:120]] = errors.get(stream.error[:120], 0) + 1
        return {"received": self.received, "alive": alive, "streams": len(self.streams),
                "comments": sum(s.decoder.comments for s in self.streams),
                "with_heartbeat": sum(1 for s in self.streams if s.decoder.comments >= 2), "errors": errors}

    async def cmd_reset(self) -> dict[str, Any]:
        for stream in self.streams:
            stream.ids = []
            stream.times = []
            if isinstance(stream.decoder, NchanDecoder):
                stream.decoder.out_of_order = 0
        self.received = 0
        return {}

    async def cmd_collect(self, by_user: bool = False) -> dict[str, Any]:
        """Per event id: the arrival times (first arrival per stream), and with
        ``by_user`` who received it; duplicates counted per stream."""
        arrivals: dict[bytes, list[float]] = {}
        receivers: dict[bytes, list[str]] = {}
        duplicates = 0
        out_of_order = 0
        for stream in self.streams:
            seen: set[bytes] = set()
            last = (-1, -1)
            for event_id, at in zip(stream.ids, stream.times):
                if event_id in seen:
                    duplicates += 1
                    continue
                seen.add(event_id)
                if not self.target.nchan:  # Nchan's own ids are checked by its decoder
                    ms, _, seq = event_id.partition(b"-")
                    key = (int(ms), int(seq or 0))
                    if key < last:
                        out_of_order += 1
                    last = max(last, key)
                arrivals.setdefault(event_id, []).append(at)
                if by_user:
                    receivers.setdefault(event_id, []).append(stream.user)
        out_of_order += sum(getattr(stream.decoder, "out_of_order", 0) for stream in self.streams)
        return {"arrivals": {k.decode(): v for k, v in arrivals.items()},
                "receivers": {k.decode(): v for k, v in receivers.items()} if by_user else None,
                "duplicates": duplicates, "out_of_order": out_of_order}

    async def cmd_close(self, users: list[str] | None = None) -> dict[str, Any]:
        """Close every stream, or only those of ``users`` (the others keep running)."""
        self.closing = True
        chosen = set(users) if users is not None else None
        kept = []
        for stream in self.streams:
            if chosen is not None and stream.user not in chosen:
                kept.append(stream)
            elif stream.transport is not None and not stream.closed:
                stream.transport.abort()
        self.streams = kept
        await asyncio.sleep(0.05)
        self.closing = False
        return {"closed_by_server": sum(1 for s in kept if s.closed)}


# --------------------------------------------------------------------------
# Publisher
# --------------------------------------------------------------------------


class HttpConnection:
    """One keep-alive HTTP/1.1 connection (asyncio streams)."""

    def __init__(self, target: Target):
        self.target = target
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, head: bytes, body: bytes, timeout: float) -> tuple[int, bytes]:
        # One asyncio.timeout per request (wait_for would wrap each read in a Task).
        try:
            async with asyncio.timeout(timeout):
                if self.writer is None:
                    self.reader, self.writer = await asyncio.open_connection(self.target.host, self.target.port)
                assert self.reader is not None
                self.writer.write(head + body)
                raw = await self.reader.readuntil(b"\r\n\r\n")
                status = int(raw[9:12])
                length = 0
                close = False
                for line in raw.split(b"\r\n")[1:]:
                    lower = line.lower()
                    if lower.startswith(b"content-length:"):
                        length = int(line[15:])
                    elif lower.startswith(b"connection:") and b"close" in lower:
                        close = True
                payload = await self.reader.readexactly(length) if length else b""
        except BaseException:
            self.close()
            raise
        if close:
            self.close()
        return status, payload

    def close(self) -> None:
        if self.writer is not None:
            self.writer.transport.abort()
        self.reader = self.writer = None


class PublisherAgent(Agent):
    def _head(self, token: str, length: int, channel: str | None) -> bytes:
        if self.target.nchan:
            return (f"POST {self.target.base}/pub/{channel or 'broadcast'} HTTP/1.1\r\n"
                    f"Host: {self.target.host_header}\r\nAccept: application/json\r\n"
                    f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n").encode("latin-1")
        return (f"POST {self.target.base}/v1/publish HTTP/1.1\r\nHost: {self.target.host_header}\r\n"
                f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {length}\r\n\r\n").encode("latin-1")

    async def cmd_publish(self, kind: str, connections: int, timeout: float, users: list[str] | None = None,
                          count: int | None = None, duration: float | None = None, rate: float | None = None,
                          batch: int = 1, token: str | None = None, seed: int = 1,
                          message_bytes: int = 40) -> dict[str, Any]:
        """Publish ``count`` requests (or for ``duration`` seconds), at ``rate``
        requests per second (open loop) or back to back; ``kind`` is
        ``broadcast`` or ``unicast`` (``batch`` notifications per request, each
        to a random user)."""
        nchan = self.target.nchan
        if nchan and batch != 1:
            raise ValueError("Nchan has no batch publish: one event per request")
        token = token or ("" if nchan else make_token(self.secret or "", "bench-publisher", publisher=True))
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
        rng = random.Random(seed)
        message = "x" * message_bytes
        sent: list[tuple[str, float, str | None]] = []  # (event id, request written at, target user)
        http_latencies: list[float] = []
        statuses: dict[str, int] = {}
        lateness_max = 0.0
        index = 0
        start = time.monotonic() + 0.05
        wall_start = time.time() + 0.05
        hard_stop = start + timeout
        total = count if count is not None else (int((duration or 0) * rate) if rate else None)
        end_by = start + duration if duration is not None else hard_stop

        def body(i: int) -> tuple[bytes, list[str | None]]:
            if kind == "broadcast":
                items: list[dict[str, Any]] = [{"broadcast": True, "type": "bench", "message": message, "data": {"i": i}}]
                targets: list[str | None] = [None]
            else:
                assert users
                chosen = [rng.choice(users) for _ in range(batch)]
                items = [{"user_id": u, "type": "bench", "message": message, "data": {"i": i}} for u in chosen]
                targets = list(chosen)
            payload: Any = items[0] if batch == 1 else items
            if nchan:  # what notifier would stream for it, the bench's key in place of notifier's id
                payload = {"k": f"{i}-0", **payload, "timestamp": stamp}
            return json.dumps(payload, separators=(",", ":")).encode(), targets

        async def worker() -> None:
            nonlocal index, lateness_max
            conn = HttpConnection(self.target)
            try:
                while True:
                    i = index
                    if (total is not None and i >= total) or time.monotonic() >= min(end_by, hard_stop):
                        return
                    index += 1
                    if rate:
                        due = start + i / rate
                        delay = due - time.monotonic()
                        if delay > 0:
                            await asyncio.sleep(delay)
                        else:
                            lateness_max = max(lateness_max, -delay)
                        if time.monotonic() >= hard_stop:
                            return
                    data, targets = body(i)
                    written = time.time()
                    t0 = time.monotonic()
                    try:
                        status, reply = await conn.request(self._head(token, len(data), targets[0]), data, 10.0)
                    except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError) as exc:
                        key = exc.__class__.__name__
                        statuses[key] = statuses.get(key, 0) + 1
                        continue
                    http_latencies.append(time.monotonic() - t0)
                    statuses[str(status)] = statuses.get(str(status), 0) + 1
                    if status in ACCEPTED:
                        if nchan:
                            sent.append((f"{i}-0", written, targets[0]))
                            continue
                        published = json.loads(reply)["published"]
                        for item, user in zip(published, targets):
                            sent.append((item["id"], written, user))
            finally:
                conn.close()

        await asyncio.gather(*(worker() for _ in range(connections)))
        return {"sent": sent, "http_latencies": http_latencies, "statuses": statuses, "requests": len(http_latencies),
                "elapsed_s": time.monotonic() - start, "wall_start": wall_start, "lateness_max_s": lateness_max}


class DirectPublisherAgent(Agent):
    """``notifier.Publisher`` straight to Redis, no HTTP: how a Python service
    publishes. Blocking redis-py in ``threads`` threads (each its own
    Publisher), one event per call, open loop at ``rate``."""

    async def cmd_publish(self, redis_url: str, users: list[str], rate: float, duration: float, timeout: float,
                          threads: int = 8, seed: int = 1, message_bytes: int = 40, part: int = 0,
                          parts: int = 1) -> dict[str, Any]:
        """Events ``part``, ``part + parts``, ... of the schedule (several such
        processes share one: one Python process publishes only so fast)."""
        return await asyncio.to_thread(self._publish, redis_url, users, rate, duration, timeout, threads, seed,
                                       message_bytes, part, parts)

    @staticmethod
    def _publish(redis_url: str, users: list[str], rate: float, duration: float, timeout: float, threads: int,
                 seed: int, message_bytes: int, part: int, parts: int) -> dict[str, Any]:
        import threading

        from notifier import Publisher

        rng = random.Random(seed)
        total = int(duration * rate)
        targets = [rng.choice(users) for _ in range(total)]
        message = "x" * message_bytes
        start = time.monotonic() + 0.2
        hard_stop = start + timeout
        results: list[list[tuple[str, float, str | None]]] = [[] for _ in range(threads)]
        latencies: list[list[float]] = [[] for _ in range(threads)]
        errors: dict[str, int] = {}
        lateness = [0.0] * threads
        publishers = [Publisher(redis_url) for _ in range(threads)]

        def run(k: int) -> None:
            publisher = publishers[k]
            for i in range(part + k * parts, total, threads * parts):
                delay = start + i / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                else:
                    lateness[k] = max(lateness[k], -delay)
                if time.monotonic() >= hard_stop:
                    return
                written = time.time()
                t0 = time.monotonic()
                try:
                    published = publisher.notify(targets[i], message, type="bench", data={"i": i})
                except Exception as exc:  # noqa: BLE001 - counted and reported
                    errors[exc.__class__.__name__] = errors.get(exc.__class__.__name__, 0) + 1
                    continue
                latencies[k].append(time.monotonic() - t0)
                results[k].append((published.id, written, targets[i]))

        workers = [threading.Thread(target=run, args=(k,), daemon=True) for k in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(max(1.0, hard_stop - time.monotonic() + 5))
        for publisher in publishers:
            publisher.close()
        sent = [item for part in results for item in part]
        calls = [value for part in latencies for value in part]
        return {"sent": sent, "http_latencies": calls, "statuses": {"202": len(sent), **errors},
                "requests": len(calls), "elapsed_s": time.monotonic() - start, "lateness_max_s": max(lateness)}


def event_loop_name() -> str:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def agent_main(kind: str, conn: Connection, url: str, secret: str | None, nofile: int,
               server: str = "notifier") -> None:
    raise_nofile(nofile)
    cls = {"streams": StreamAgent, "publisher": PublisherAgent, "direct": DirectPublisherAgent}[kind]

    async def main() -> None:
        await cls(conn, url, secret, server).serve()

    # uvloop (a dev dependency) roughly halves the client's CPU per event, which
    # on a machine shared with the server leaves that CPU to the server.
    if event_loop_name() == "uvloop":
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())
