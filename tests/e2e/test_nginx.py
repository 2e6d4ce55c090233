"""Several pods behind a load balancer, simulated: two gunicorn instances and
one redis-server behind a real nginx (Debian's /usr/sbin/nginx, run as our
own process from a generated config in a temp dir, on free loopback ports).

The ``location /v1/events`` block is taken from docs/deployment.md, so the
documented proxy settings are the ones under test. A second server with gzip
on for text/event-stream, buffering as nginx does by default, shows why the
docs forbid it: it holds every event (measured with nginx 1.22: not even the
headers arrive). With ``proxy_buffering off`` nginx 1.22 flushes gzip on every
write, so the documented config would survive gzip, but it is off anyway.
"""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from ..support import tokens
from ..support.processes import ROOT, Gunicorn, RedisServer, free_port, wait_until
from ..support.sse import EventSourceClient, SSEConnection

pytestmark = pytest.mark.e2e

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
DRAIN_SECONDS = 2.0


def documented_events_location() -> str:
    """The body of ``location /v1/events { ... }`` in docs/deployment.md's nginx example."""
    text = (ROOT / "docs" / "deployment.md").read_text()
    block = text.split("```nginx", 1)[1].split("```", 1)[0]
    match = re.search(r"location /v1/events \{\n(.*?)\n    \}", block, re.DOTALL)
    assert match, "docs/deployment.md has no nginx location /v1/events block"
    body = match.group(1)
    assert "proxy_buffering off;" in body and "proxy_http_version 1.1;" in body
    return body


class Nginx:
    """nginx in the foreground, everything (pid, logs, temp files) in a temp dir."""

    def __init__(self, upstreams: list[int]):
        if not Path(NGINX).exists():
            raise RuntimeError("nginx is not installed: run scripts/ensure-system-deps (apt-get install nginx); no skip")
        self.dir = Path(tempfile.mkdtemp(prefix="notifier-nginx-"))
        self.port = free_port()
        self.gzip_port = free_port()
        self.upstreams = upstreams
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def gzip_url(self) -> str:
        return f"http://127.0.0.1:{self.gzip_port}"

    def config(self) -> str:
        d = self.dir
        servers = "\n".join(f"        server 127.0.0.1:{port} max_fails=1 fail_timeout=5s;" for port in self.upstreams)
        events_location = documented_events_location()
        return f"""
worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 1024; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    upstream notifier {{
{servers}
        keepalive 32;
    }}
    # Which instance served the request, for the test to see.
    add_header X-Upstream $upstream_addr always;
    server {{
        listen 127.0.0.1:{self.port};
        location /v1/events {{
{events_location}
        }}
        location / {{
            proxy_pass http://notifier;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
    # What the docs warn against: gzip on for text/event-stream on a proxy
    # that buffers (here: one that ignores the app's X-Accel-Buffering: no).
    server {{
        listen 127.0.0.1:{self.gzip_port};
        location / {{
            proxy_pass http://notifier;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_ignore_headers X-Accel-Buffering;
            gzip on;
            gzip_min_length 0;
            gzip_types text/event-stream;
        }}
    }}
}}
"""

    def start(self) -> Nginx:
        conf = self.dir / "nginx.conf"
        conf.write_text(self.config())
        test = subprocess.run([NGINX, "-t", "-p", str(self.dir), "-c", str(conf), "-e", str(self.dir / "error.log")],
                              capture_output=True, text=True, timeout=30, check=False)
        assert test.returncode == 0, test.stderr
        self.process = subprocess.Popen([NGINX, "-p", str(self.dir), "-c", str(conf), "-e", str(self.dir / "error.log")],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def listening() -> bool:
            assert self.process is not None and self.process.poll() is None, self.error_log()
            with socket.socket() as sock:
                return sock.connect_ex(("127.0.0.1", self.port)) == 0

        wait_until(listening, 10, message="nginx to listen")
        return self

    def error_log(self) -> str:
        try:
            return (self.dir / "error.log").read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)  # graceful: workers finish, then exit
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def cluster() -> Iterator[tuple[Nginx, list[Gunicorn], RedisServer]]:
    redis_server = RedisServer().start()
    env = {
        "NOTIFIER_REDIS_URL": redis_server.url,
        "NOTIFIER_JWT_SECRET": tokens.SECRET,
        "NOTIFIER_HEARTBEAT_SECONDS": "0.5",
        "NOTIFIER_RETRY_MS": "300",
        "NOTIFIER_DRAIN_SECONDS": str(DRAIN_SECONDS),
        "NOTIFIER_PROBE_INTERVAL_SECONDS": "1",
    }
    pods = [Gunicorn(env, workers=1), Gunicorn(env, workers=1)]
    nginx = Nginx([pod.port for pod in pods])
    try:
        for pod in pods:
            pod.start()
        nginx.start()
        yield nginx, pods, redis_server
    finally:
        nginx.stop()
        for pod in pods:
            pod.stop()
        redis_server.stop()


def publish(url: str, body: object) -> requests.Response:
    return requests.post(url + "/v1/publish", json=body, headers=tokens.bearer(tokens.publisher()), timeout=10)


def upstream_of(client: EventSourceClient) -> str | None:
    connection = client.connection
    return connection.headers.get("x-upstream") if connection is not None else None


def test_an_event_published_on_one_instance_reaches_a_client_on_the_other(cluster) -> None:
    nginx, pods, _ = cluster
    connection = SSEConnection(nginx.url + "/v1/events", tokens.bearer(tokens.token("carol")))
    try:
        assert connection.status == 200
        assert connection.headers["content-type"].startswith("text/event-stream")
        served_by = connection.headers["x-upstream"]
        other = next(pod for pod in pods if not served_by.endswith(f":{pod.port}"))
        assert publish(other.url, {"user_id": "carol", "message": "from the other pod"}).status_code == 202
        [event] = connection.collect(1, 5)
        assert event.json()["message"] == "from the other pod"
    finally:
        connection.close()


def test_stopping_one_instance_moves_its_clients_to_the_other_losing_nothing(cluster) -> None:
    nginx, pods, _ = cluster
    users = [f"fail{i}" for i in range(8)]
    clients = [EventSourceClient(nginx.url + "/v1/events", tokens.bearer(tokens.token(user)), max_retry_seconds=1.0).start()
               for user in users]
    published: list[int] = []
    stop_publishing = threading.Event()
    errors: list[str] = []

    doomed, survivor = pods

    def publisher() -> None:
        # One batch (one event per user) every 50 ms; bounded. Straight to the
        # instance that stays: a POST that nginx had already sent to the one
        # stopping is not retried (non-idempotent), and what is under test
        # here is the subscribers' failover.
        for sequence in range(600):
            if stop_publishing.is_set():
                return
            body = [{"user_id": user, "message": str(sequence)} for user in users]
            for _attempt in range(20):
                try:
                    response = publish(survivor.url, body)
                except requests.RequestException as exc:
                    errors.append(repr(exc))
                    time.sleep(0.05)
                    continue
                if response.status_code == 202:
                    published.append(sequence)
                    break
                errors.append(f"{response.status_code} {response.text[:200]}")
                time.sleep(0.05)
            else:
                return
            time.sleep(0.05)

    thread = threading.Thread(target=publisher, daemon=True)
    try:
        wait_until(lambda: all(upstream_of(c) for c in clients), 10, message="every client connected through nginx")
        on_doomed = [c for c in clients if upstream_of(c).endswith(f":{doomed.port}")]
        assert 0 < len(on_doomed) < len(clients), "nginx spreads the clients over both instances"
        thread.start()
        wait_until(lambda: len(published) >= 10, 10, message="publishing to start")

        stopped_at = time.monotonic()
        doomed.signal(signal.SIGTERM)

        def moved() -> bool:
            return all(c.connects >= 2 and upstream_of(c).endswith(f":{survivor.port}") for c in on_doomed)

        wait_until(moved, DRAIN_SECONDS + 20, interval=0.02, message="the drained clients to reconnect to the other instance")
        failover = time.monotonic() - stopped_at
        assert doomed.wait(30) == 0, doomed.log()
        stopped_in = time.monotonic() - stopped_at
        time.sleep(1.0)  # keep publishing for a while on the survivor
        stop_publishing.set()
        thread.join(15)
        assert not thread.is_alive()
        expected = [str(n) for n in published]
        assert len(expected) >= 20

        def complete() -> bool:
            return all(len(c.notifications()) >= len(expected) for c in clients)

        try:
            wait_until(complete, 15, message="every client to have every event")
        except AssertionError:
            report = {user: (len(c.notifications()), sorted(set(expected) - {n["message"] for n in c.notifications()}, key=int)[:10],
                             c.connects, c.statuses, [e.event for e in c.events if e.event == "reset"])
                      for user, c in zip(users, clients)}
            raise AssertionError(f"published {len(expected)}; per client (got, missing, connects, statuses, resets): {report}") from None
        for user, client in zip(users, clients):
            assert [e.event for e in client.events if e.event == "reset"] == [], f"{user} was reset instead of resumed"
            got = [n["message"] for n in client.notifications()]
            assert got == expected, f"{user}: lost or duplicated events across the failover"
        # Drained with a 503 at most on a reused upstream connection, never a 502.
        assert all(status in (200, 503) for c in clients for status in c.statuses)
        assert not errors, errors[:5]
        print(f"\nfailover through nginx: {len(on_doomed)} clients moved in {failover:.2f}s "
              f"(drain window {DRAIN_SECONDS:g}s); instance stopped in {stopped_in:.2f}s; {len(expected)} batches, none lost")
        assert failover < DRAIN_SECONDS + 15
    finally:
        stop_publishing.set()
        for client in clients:
            client.stop()
        if thread.ident:
            thread.join(15)


def read_raw(sock: socket.socket, seconds: float) -> bytes:
    data = b""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        if not chunk:
            break
        data += chunk
    return data


def dechunk(body: bytes) -> bytes:
    out = b""
    while b"\r\n" in body:
        size_line, rest = body.split(b"\r\n", 1)
        try:
            size = int(size_line.split(b";")[0], 16)
        except ValueError:
            break
        if size == 0 or len(rest) < size:
            out += rest[:size]
            break
        out += rest[:size]
        body = rest[size + 2:]
    return out


def test_gzip_on_event_stream_holds_events_and_the_documented_config_does_not(cluster) -> None:
    nginx, pods, _ = cluster
    auth = tokens.bearer(tokens.token("gzipped"))
    # The documented config: events arrive at once, even when the client accepts gzip.
    documented = SSEConnection(nginx.url + "/v1/events", {**auth, "Accept-Encoding": "gzip"})
    trap = socket.create_connection(("127.0.0.1", nginx.gzip_port), timeout=5)
    try:
        assert documented.status == 200 and "content-encoding" not in documented.headers
        request = (f"GET /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\nAccept-Encoding: gzip\r\n"
                   f"Authorization: {auth['Authorization']}\r\n\r\n")
        trap.sendall(request.encode())
        head = read_raw(trap, 2.0)
        published_at = time.monotonic()
        assert publish(pods[0].url, {"user_id": "gzipped", "message": "held back?"}).status_code == 202
        [event] = documented.collect(1, 5)
        assert event.json()["message"] == "held back?"
        delivered_in = time.monotonic() - published_at
        assert delivered_in < 2.0
        # Through gzip on a buffering proxy: nothing of the event within 3 s
        # (nginx holds it until the stream ends).
        raw = head + read_raw(trap, 3.0)
        header_end = raw.find(b"\r\n\r\n")
        if header_end >= 0:
            headers, body = raw[:header_end].decode("latin-1").lower(), raw[header_end + 4:]
            assert "content-encoding: gzip" in headers
            text = zlib.decompressobj(31).decompress(dechunk(body)) if body else b""
        else:
            text = b""
        assert b"held back?" not in text, "gzip did not hold the event: the lesson no longer holds"
    finally:
        documented.close()
        trap.close()
