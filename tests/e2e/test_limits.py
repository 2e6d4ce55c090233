"""Bounds under a real gunicorn (gevent workers) and a real redis-server
(issue 12): what a reconnect can make a worker read, what a client that
stops reading can hold, how many streams a user or a worker can open, and
health probes that answer whatever the streams do. Each test prints what
it measured (``pytest -s``)."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import requests

from ..support import tokens
from ..support.processes import Gunicorn, RedisServer, rss_kib, wait_until
from ..support.sse import SSEConnection

pytestmark = pytest.mark.e2e

PREFIX = "notifier:"
TOPICS = [f"load:{i}" for i in range(20)]

# Writes ``count`` events of ``size`` bytes into each topic's history, with
# ids following the sequence, and moves the sequence past them: what a busy
# publisher would have left, in one call per topic instead of 20,000 publishes.
FILL_SCRIPT = """
local ms = tonumber(redis.call('HGET', KEYS[1], 'ms'))
local seq = tonumber(redis.call('HGET', KEYS[1], 'seq'))
local big = string.rep('x', tonumber(ARGV[2]))
for i = 1, tonumber(ARGV[1]) do
  seq = seq + 1
  local id = string.format('%d-%d', ms, seq)
  local payload = '{"id":"' .. id .. '","topic":"' .. ARGV[3] .. '","type":"notification","message":"' .. big ..
    '","data":{},"timestamp":"2026-01-01T00:00:00.000Z"}'
  redis.call('XADD', KEYS[2], id, 'd', payload)
end
redis.call('HSET', KEYS[1], 'seq', seq)
return seq
"""


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()


def start_gunicorn(redis_server: RedisServer, workers: int = 1, **settings: str) -> Gunicorn:
    env = {
        "NOTIFIER_REDIS_URL": redis_server.url,
        "NOTIFIER_JWT_SECRET": tokens.SECRET,
        "NOTIFIER_HEARTBEAT_SECONDS": "1",
        "NOTIFIER_PROBE_INTERVAL_SECONDS": "1",
    }
    env.update({f"NOTIFIER_{name.upper()}": value for name, value in settings.items()})
    return Gunicorn(env, workers=workers).start()


def publish(server: Gunicorn, body: object) -> list[str]:
    response = requests.post(server.url + "/v1/publish", json=body, headers=tokens.bearer(tokens.publisher()), timeout=10)
    assert response.status_code == 202, response.text
    return [item["id"] for item in response.json()["published"]]


class PeakRSS:
    """Samples a process's resident memory every few milliseconds while running."""

    def __init__(self, pid: int):
        self.pid = pid
        self.start_kib = rss_kib(pid)
        self.peak_kib = self.start_kib
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kib = max(self.peak_kib, rss_kib(self.pid))
            time.sleep(0.005)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    @property
    def growth_mb(self) -> float:
        return (self.peak_kib - self.start_kib) / 1024


# --------------------------------------------------------------------------
# Finding 4: a replay's memory is bounded whatever the history holds
# --------------------------------------------------------------------------


def test_replay_over_a_huge_history_resets_without_reading_it(redis_server) -> None:
    """20 topics x 1,000 x 60 KB (1.2 GB in Redis); four clients resume from
    before all of it at once. The worker answers ``too_many`` and its memory
    grows by less than 50 MB."""
    server = start_gunicorn(redis_server)
    client = redis_server.client()
    try:
        [resume_from] = publish(server, {"topic": TOPICS[0], "message": "before the flood"})
        fill = client.register_script(FILL_SCRIPT)
        for topic in TOPICS:
            fill(keys=[PREFIX + "sequence", f"{PREFIX}history:topic:{topic}"], args=[1000, 60_000, topic])
        assert client.xlen(f"{PREFIX}history:topic:{TOPICS[-1]}") == 1000
        query = "?" + "&".join(f"topic={topic}" for topic in TOPICS)
        headers = {**tokens.bearer(tokens.token("alice", topics=["load:*"])), "Last-Event-ID": resume_from}
        [worker] = server.worker_pids()
        requests.get(server.url + "/livez", timeout=5)  # warm
        with PeakRSS(worker) as rss:
            connections = [SSEConnection(server.url + "/v1/events" + query, headers, timeout=60) for _ in range(4)]
            first = [connection.events(10) for connection in connections]
            time.sleep(0.2)
        for connection in connections:
            connection.close()
        for events in first:
            assert [(e.event, e.json()["reason"]) for e in events[:1]] == [("reset", "too_many")], events[:1]
        print(f"\nreplay over 20 x 1,000 x 60 KB, 4 clients at once: worker RSS +{rss.growth_mb:.1f} MB "
              f"({rss.start_kib // 1024} -> {rss.peak_kib // 1024} MB)")
        assert rss.growth_mb < 50, f"worker RSS grew {rss.growth_mb:.0f} MB"
    finally:
        server.stop()
        client.flushall()


# --------------------------------------------------------------------------
# Finding 5: a client that stops reading holds nothing past its bounds
# --------------------------------------------------------------------------


def metric(server: Gunicorn, line_start: str) -> float:
    text = requests.get(server.url + "/metrics", timeout=5).text
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(line_start)]
    return sum(values)


def disconnects(server: Gunicorn, reason: str) -> float:
    return metric(server, f'notifier_stream_disconnects_total{{reason="{reason}"}}')


def stalled_stream(server: Gunicorn, token: str) -> socket.socket:
    """A real client that reads the response head and then stops reading,
    with a small receive buffer so the server's writes soon block."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(5)
    sock.connect(("127.0.0.1", server.port))
    sock.sendall(f"GET /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n".encode())
    head = sock.recv(1024)
    assert head.startswith(b"HTTP/1.1 200"), head
    return sock


def flood(server: Gunicorn, user: str, megabytes: int = 9) -> None:
    """About ``megabytes`` of events for ``user``, more than the socket buffers hold."""
    for _ in range(megabytes // 3):
        publish(server, [{"user_id": user, "message": "x" * 60_000}] * 50)


def stream_ends(server: Gunicorn, reason: str, before: float, within: float) -> float:
    """Seconds until a stream ended with ``reason`` (fails after ``within``)."""
    started = time.monotonic()
    wait_until(lambda: disconnects(server, reason) > before, within, interval=0.1, message=f"a stream ended: {reason}")
    return time.monotonic() - started


@pytest.fixture(scope="module")
def patient_server(redis_server) -> Iterator[Gunicorn]:
    """Large queues and a long write timeout: only the token's expiry or
    the write timeout can end a stalled stream."""
    server = start_gunicorn(redis_server, queue_bytes=str(64 * 1024 * 1024), write_timeout_seconds="6")
    yield server
    server.stop()


def test_a_stream_blocked_in_a_write_still_ends_at_its_token_expiry(patient_server) -> None:
    server = patient_server
    before = disconnects(server, "token_expired")
    expires_at = time.time() + 3
    sock = stalled_stream(server, tokens.token("stalled-exp", ttl=3))
    try:
        flood(server, "stalled-exp")
        took = stream_ends(server, "token_expired", before, within=5)
        late = time.time() - expires_at
        print(f"\nstalled reader: stream ended {late:.2f} s after its token's exp")
        assert late < 2, "closed at exp (within the alarm clock's second), not at the write timeout"
        assert took < 5 and metric(server, "notifier_streams_open") == 0
    finally:
        sock.close()


def test_a_write_that_blocks_past_the_write_timeout_ends_the_stream(patient_server) -> None:
    server = patient_server
    before = disconnects(server, "write_timeout")
    sock = stalled_stream(server, tokens.token("stalled-write"))
    try:
        flood(server, "stalled-write")
        took = stream_ends(server, "write_timeout", before, within=12)
        print(f"\nstalled reader: stream ended {took:.2f} s after the flood (write timeout 6 s)")
        assert metric(server, "notifier_streams_open") == 0
    finally:
        sock.close()


def test_a_queue_over_its_bytes_evicts_the_stream(redis_server) -> None:
    server = start_gunicorn(redis_server, queue_bytes=str(256 * 1024), write_timeout_seconds="60")
    try:
        sock = stalled_stream(server, tokens.token("stalled-queue"))
        try:
            flood(server, "stalled-queue")
            stream_ends(server, "evicted", 0, within=5)
            assert metric(server, "notifier_evictions_total") == 1
        finally:
            sock.close()
    finally:
        server.stop()


# --------------------------------------------------------------------------
# Finding 2: a user's streams are counted across pods, and a dead pod's expire
# --------------------------------------------------------------------------


def open_stream(server: Gunicorn, user: str) -> SSEConnection:
    connection = SSEConnection(server.url + "/v1/events", tokens.bearer(tokens.token(user)))
    assert connection.status == 200, connection.read_body()
    return connection


def refusal(server: Gunicorn, user: str) -> requests.Response:
    response = requests.get(server.url + "/v1/events", headers={**tokens.bearer(tokens.token(user)),
                                                                 "Connection": "close"}, stream=True, timeout=5)
    assert not response.headers.get("Content-Type", "").startswith("text/event-stream"), "expected a refusal"
    _ = response.content
    return response


def opens(server: Gunicorn, user: str) -> bool:
    """True when a stream opens (it is closed again at once), False on a 429."""
    response = requests.get(server.url + "/v1/events", headers=tokens.bearer(tokens.token(user)), stream=True, timeout=5)
    response.close()
    assert response.status_code in (200, 429), response.status_code
    return response.status_code == 200


def test_the_per_user_cap_holds_across_pods_and_a_killed_pod_s_streams_expire(redis_server) -> None:
    settings = {"max_streams_per_user": "3", "stream_lease_seconds": "3"}
    pod_a, pod_b = start_gunicorn(redis_server, **settings), start_gunicorn(redis_server, **settings)
    streams: list[SSEConnection] = []
    try:
        streams += [open_stream(pod_a, "carol"), open_stream(pod_a, "carol"), open_stream(pod_b, "carol")]
        for pod in (pod_a, pod_b):
            refused = refusal(pod, "carol")
            assert refused.status_code == 429 and refused.json()["error"]["code"] == "too_many_streams"
            assert int(refused.headers["Retry-After"]) >= 1
        streams.append(open_stream(pod_b, "dave"))  # another user is not affected

        streams.pop(2).close()  # a stream that ends gives its place back at once
        wait_until(lambda: metric(pod_b, "notifier_streams_open") == 1, 5, interval=0.1)
        streams.append(open_stream(pod_b, "carol"))

        # Pod A dies without a word: its two leases are never released, and run out.
        for pid in [*pod_a.worker_pids(), pod_a.process.pid]:  # type: ignore[union-attr]
            os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        wait_until(lambda: opens(pod_b, "carol"), 8, interval=0.25, message="pod A's leases expired")
        print(f"\nper-user cap across pods: a killed pod's streams stopped counting after "
              f"{time.monotonic() - killed:.1f} s (lease 3 s)")
    finally:
        for connection in streams:
            connection.close()
        pod_a.stop()
        pod_b.stop()


# --------------------------------------------------------------------------
# Finding 3: health probes answer at once with the worker at its stream cap
# --------------------------------------------------------------------------


def test_probes_answer_within_100_ms_with_the_worker_at_its_stream_cap(redis_server) -> None:
    """gunicorn's worker_connections 20: the worker takes 15 streams and
    keeps 5 connections for everything else."""
    server = start_gunicorn(redis_server, worker_connections="20")
    streams: list[SSEConnection] = []
    try:
        streams = [open_stream(server, f"user{i}") for i in range(15)]
        started = time.monotonic()
        for i in range(10):
            refused = refusal(server, f"late{i}")
            assert refused.status_code == 503 and refused.json()["error"]["code"] == "worker_full"
        refusal_ms = (time.monotonic() - started) * 100  # per refusal
        latencies: dict[str, list[float]] = {}
        for path in ("/livez", "/readyz", "/metrics"):
            requests.get(server.url + path, headers={"Connection": "close"}, timeout=5)  # first use: imports, caches
            for _ in range(20):
                began = time.monotonic()
                response = requests.get(server.url + path, headers={"Connection": "close"}, timeout=5)
                latencies.setdefault(path, []).append((time.monotonic() - began) * 1000)
                assert response.status_code == 200, (path, response.text[:200])
        report = ", ".join(f"{path} max {max(values):.1f} ms (median {sorted(values)[10]:.1f})"
                           for path, values in latencies.items())
        print(f"\nat the stream cap (15 streams, 10 refused, {refusal_ms:.1f} ms per refusal): {report}")
        for path, values in latencies.items():
            assert max(values) < 100, (path, values)
        assert all(connection.events(0.05) is not None for connection in streams), "the streams are still open"
        assert metric(server, "notifier_streams_open") == 15
    finally:
        for connection in streams:
            connection.close()
        server.stop()
