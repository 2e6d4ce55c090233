"""Operations against real processes: Prometheus metrics summed across two
gunicorn workers, health endpoints following Redis, and the JSON logs.

Each stack is real gunicorn (2 gevent workers) and a redis-server of its own,
with ``PROMETHEUS_MULTIPROC_DIR`` in a temp dir so each worker's own values
can be read from its files without scraping.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from ..support import tokens
from ..support.processes import Gunicorn, RedisServer, wait_until
from ..support.refusals import get_refusal
from ..support.sse import SSEConnection

pytestmark = pytest.mark.e2e

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

# Every label a notifier metric may carry: small fixed sets, never an id
# ("shard": "primary", or one Redis Cluster master's host:port per shard).
ALLOWED_LABELS = {"reason", "target", "status", "endpoint", "generation", "le", "shard"}
REQUIRED = {
    "notifier_streams_open": "gauge",
    "notifier_stream_connects": "counter",
    "notifier_stream_disconnects": "counter",
    "notifier_stream_rejections": "counter",
    "notifier_events_published": "counter",
    "notifier_events_delivered": "counter",
    "notifier_publish_to_write_seconds": "histogram",
    "notifier_replays": "counter",
    "notifier_replayed_events": "counter",
    "notifier_replay_resets": "counter",
    "notifier_evictions": "counter",
    "notifier_subscriber_reconnects": "counter",
    "notifier_subscriber_probe_age_seconds": "gauge",
    "notifier_subscriber_up": "gauge",
    "notifier_auth_failures": "counter",
    "notifier_publish_errors": "counter",
    "notifier_publish_requests": "counter",
    "notifier_readiness_failures": "counter",
    "notifier_worker_cpu_seconds": "counter",
    "notifier_worker_resident_memory_bytes": "gauge",
    "notifier_memory_limit_bytes": "gauge",
    "notifier_draining": "gauge",
    "notifier_gc_pause_seconds": "histogram",
}


def start_stack(metrics_dir: Path, **env: str) -> tuple[Gunicorn, RedisServer]:
    redis_server = RedisServer().start()
    server = Gunicorn({
        "NOTIFIER_REDIS_URL": redis_server.url,
        "NOTIFIER_JWT_SECRET": tokens.SECRET,
        "NOTIFIER_HEARTBEAT_SECONDS": "0.5",
        "NOTIFIER_QUEUE_SIZE": "8",
        "NOTIFIER_PROBE_INTERVAL_SECONDS": "0.5",
        "NOTIFIER_PROBE_TIMEOUT_SECONDS": "1",
        "NOTIFIER_DRAIN_SECONDS": "1",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        **env,
    }, workers=2)
    try:
        server.start()
    except BaseException:
        server.stop()
        redis_server.stop()
        raise
    return server, redis_server


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gunicorn, RedisServer]]:
    server, redis_server = start_stack(tmp_path_factory.mktemp("metrics"))
    try:
        yield server, redis_server
    finally:
        server.stop()
        redis_server.stop()


def scrape(server: Gunicorn) -> Samples:
    response = requests.get(server.url + "/metrics", timeout=5)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    return parse(response.text)


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def worker_value(metrics_dir: Path, pid: int, name: str) -> float | None:
    """One worker's own value of an unlabelled metric, read from its files."""
    files = [str(path) for path in metrics_dir.glob(f"*_{pid}.db")]
    for metric in MultiProcessCollector.merge(files, accumulate=True):
        for sample in metric.samples:
            if sample.name == name:
                return float(sample.value)
    return None


def connect(server: Gunicorn, user: str, headers: dict[str, str] | None = None, query: str = "",
            **claims: object) -> SSEConnection:
    all_headers = tokens.bearer(tokens.token(user, **claims))
    all_headers.update(headers or {})
    connection = SSEConnection(server.url + "/v1/events" + query, all_headers)
    assert connection.status == 200, connection.read_body()
    return connection


def publish(server: Gunicorn, body: object) -> dict:
    response = requests.post(server.url + "/v1/publish", json=body, headers=tokens.bearer(tokens.publisher()), timeout=10)
    assert response.status_code == 202, response.text
    return response.json()


def pubsub_channel_counts(redis_server: RedisServer) -> list[int]:
    clients = redis_server.client().client_list()
    return [int(c["sub"]) for c in clients if int(c.get("sub", 0)) > 0]


# ---------------------------------------------------------------------------
# metrics


def test_names_types_and_labels_follow_prometheus_conventions(stack) -> None:
    server, _ = stack
    text = requests.get(server.url + "/metrics", timeout=5).text
    families = {family.name: family for family in text_string_to_metric_families(text) if family.name.startswith("notifier_")}
    for name, kind in REQUIRED.items():
        assert name in families, f"{name} missing from /metrics"
        assert families[name].type == kind, (name, families[name].type)
    for family in families.values():
        for sample in family.samples:
            if family.type == "counter":
                assert sample.name.endswith(("_total", "_created")), sample.name
            assert set(sample.labels) <= ALLOWED_LABELS, (sample.name, sample.labels)
        if "seconds" in family.name or "age" in family.name or "latency" in family.name:
            assert family.name.endswith("_seconds") or family.name.endswith("_seconds_total"), family.name
        assert not re.search(r"_(ms|milliseconds|minutes|hours|kilobytes|megabytes)(_total)?$", family.name), family.name
    # The series exist before the first event, at 0, so rate() works from the start.
    samples = parse(text)
    for reason in ("client_gone", "token_expired", "deadline", "evicted", "shutdown", "error"):
        assert ("notifier_stream_disconnects_total", frozenset({("reason", reason)})) in samples
    for kind in ("user", "topic", "broadcast"):
        assert ("notifier_events_published_total", frozenset({("target", kind)})) in samples


def test_workers_time_their_garbage_collections(stack) -> None:
    server, _ = stack
    open_before = value(scrape(server), "notifier_streams_open")
    before = value(scrape(server), "notifier_gc_pause_seconds_count", generation="0")
    # Streams opened and closed leave young garbage (Werkzeug's router makes
    # a small cycle per request): young collections follow, and each is
    # recorded within the recorder's one-second flush.
    for round_ in range(4):
        connections = [connect(server, f"gc-{round_}-{i}") for i in range(25)]
        for connection in connections:
            connection.close()
    wait_until(lambda: value(scrape(server), "notifier_gc_pause_seconds_count", generation="0") > before, 10,
               message="young collections in notifier_gc_pause_seconds")
    samples = scrape(server)
    assert value(samples, "notifier_gc_pause_seconds_sum", generation="0") > 0
    for generation in ("0", "1", "2"):
        assert ("notifier_gc_pause_seconds_count", frozenset({("generation", generation)})) in samples
    # The server notices the closed streams within a heartbeat (0.5 s here).
    wait_until(lambda: value(scrape(server), "notifier_streams_open") == open_before, 10,
               message="the closed streams to be noticed")


def test_counters_sum_across_workers_and_a_killed_workers_gauges_go(stack) -> None:
    server, redis_server = stack
    before = scrape(server)
    # Both workers must hold some of the streams (more than their own 2
    # channels each). Which worker accepts a connection is the kernel's
    # choice, so open streams until both have some (bounded).
    wait_until(lambda: len(pubsub_channel_counts(redis_server)) == 2, 15, message="both workers' subscribers")

    def both_hold_streams() -> bool:
        counts = pubsub_channel_counts(redis_server)
        return len(counts) == 2 and all(count > 2 for count in counts)

    connections = [connect(server, f"sum{i}") for i in range(12)]
    while not both_hold_streams() and len(connections) < 100:
        connections.append(connect(server, f"sum{len(connections)}"))
    total = len(connections)
    try:
        counts = pubsub_channel_counts(redis_server)
        assert len(counts) == 2 and all(count > 2 for count in counts), counts
        # Whichever worker answers the scrape, the totals are the sum of both.
        for _ in range(6):
            samples = scrape(server)
            assert value(samples, "notifier_streams_open") == total
            assert value(samples, "notifier_stream_connects_total") - value(before, "notifier_stream_connects_total") == total

        victim = server.worker_pids()[0]
        os.kill(victim, signal.SIGKILL)

        def survivors() -> list[SSEConnection]:
            for connection in connections:
                if not connection.closed:
                    connection.events(0.01)
            return [c for c in connections if not c.closed]

        wait_until(lambda: len(survivors()) < total, 10, message="the killed worker's streams to end")
        time.sleep(0.5)
        alive = len(survivors())
        assert 0 < alive < total
        # The dead worker's live gauge is gone from the sum; its counters stay (counters never go back).
        wait_until(lambda: value(scrape(server), "notifier_streams_open") == alive, 10,
                   message=f"streams_open to fall to the {alive} streams left")
        samples = scrape(server)
        assert value(samples, "notifier_stream_connects_total") - value(before, "notifier_stream_connects_total") == total
    finally:
        for connection in connections:
            connection.close()
    wait_until(lambda: len(server.worker_pids()) == 2, 20, message="gunicorn to replace the killed worker")
    server.wait_ready()
    wait_until(lambda: value(scrape(server), "notifier_streams_open") == 0, 10, message="streams_open back to 0")


def test_each_metric_moves_with_what_it_counts(stack) -> None:
    server, _ = stack
    before = scrape(server)

    def delta(name: str, **labels: str) -> float:
        return value(scrape(server), name, **labels) - value(before, name, **labels)

    alice = connect(server, "alice", query="?topic=orders:1", topics=["orders:*"])
    try:
        first = publish(server, {"user_id": "alice", "message": "one"})["published"][0]["id"]
        publish(server, {"topic": "orders:1", "message": "two"})
        publish(server, {"broadcast": True, "message": "three"})
        assert [e.json()["message"] for e in alice.collect(3, 5)] == ["one", "two", "three"]
        samples = scrape(server)
        assert value(samples, "notifier_events_published_total", target="user") - value(
            before, "notifier_events_published_total", target="user") == 1
        assert value(samples, "notifier_events_published_total", target="topic") - value(
            before, "notifier_events_published_total", target="topic") == 1
        assert value(samples, "notifier_events_published_total", target="broadcast") - value(
            before, "notifier_events_published_total", target="broadcast") == 1
        assert delta("notifier_events_delivered_total") >= 3
        assert delta("notifier_publish_to_write_seconds_count") >= 3
        assert delta("notifier_publish_to_write_seconds_bucket", le="+Inf") >= 3
        assert 0 <= delta("notifier_publish_to_write_seconds_sum") < 30
    finally:
        alice.close()

    # Resume from the first id: one replay of the two events after it.
    resumed = connect(server, "alice", headers={"Last-Event-ID": first}, query="?topic=orders:1", topics=["orders:*"])
    assert [e.json()["message"] for e in resumed.collect(2, 5)] == ["two", "three"]
    assert delta("notifier_replays_total") == 1
    assert delta("notifier_replayed_events_total") == 2
    resumed.close()
    reset = connect(server, "alice", headers={"Last-Event-ID": "not-an-id"})
    assert [e.event for e in reset.collect(1, 5)] == ["reset"]
    assert delta("notifier_replay_resets_total", reason="unknown_id") == 1
    reset.close()

    # A closed client is noticed within a heartbeat (0.5 s).
    wait_until(lambda: delta("notifier_stream_disconnects_total", reason="client_gone") >= 3, 10,
               message="client_gone disconnects")
    # A stream ends when its token expires.
    expiring = connect(server, "bob", ttl=2)
    wait_until(lambda: expiring.events(0.1) == [] and expiring.closed, 15, message="the stream to end at token expiry")
    expiring.close()
    wait_until(lambda: delta("notifier_stream_disconnects_total", reason="token_expired") == 1, 5, message="token_expired")

    # Refused credentials and failed publishes, by endpoint and status.
    assert get_refusal(server.url + "/v1/events", headers=tokens.bearer("nope"), timeout=5).status_code == 401
    assert requests.get(server.url + "/v1/notifications", timeout=5).status_code == 401
    assert requests.post(server.url + "/v1/publish", json={"user_id": "x", "message": "m"},
                         headers=tokens.bearer(tokens.token("alice")), timeout=5).status_code == 403
    assert requests.post(server.url + "/v1/publish", json={"message": "no target"},
                         headers=tokens.bearer(tokens.publisher()), timeout=5).status_code == 422
    assert delta("notifier_auth_failures_total", endpoint="events") == 1
    assert delta("notifier_auth_failures_total", endpoint="notifications") == 1
    assert delta("notifier_auth_failures_total", endpoint="publish") == 1
    assert delta("notifier_stream_rejections_total", status="401") == 1
    assert delta("notifier_publish_errors_total", status="403") == 1
    assert delta("notifier_publish_errors_total", status="422") == 1

    # Never a user id (or a topic) in a label value.
    text = requests.get(server.url + "/metrics", timeout=5).text
    for identifier in ("alice", "bob", "orders:1"):
        assert identifier not in text


def test_a_client_that_stops_reading_is_evicted_and_counted(stack) -> None:
    server, redis_server = stack
    before = scrape(server)

    def delta(name: str, **labels: str) -> float:
        return value(scrape(server), name, **labels) - value(before, name, **labels)

    slow = connect(server, "slowpoke")  # never read from again
    try:
        big = "x" * 60_000
        # Batches of 6 MB until the socket buffers are full and the queue (8) overflows; bounded.
        for _ in range(8):
            publish(server, [{"user_id": "slowpoke", "message": big}] * 100)
            if delta("notifier_evictions_total") >= 1:
                break
        wait_until(lambda: delta("notifier_evictions_total") == 1
                   and delta("notifier_stream_disconnects_total", reason="evicted") == 1, 15,
                   message="the slow stream to be evicted and counted")
        wait_until(lambda: value(scrape(server), "notifier_streams_open") == 0, 10, message="the evicted stream closed")
    finally:
        slow.close()
        redis_server.client().delete("notifier:history:user:slowpoke")


# ---------------------------------------------------------------------------
# health, and the subscriber gauges each worker keeps current


def test_readyz_follows_redis_and_each_worker_keeps_its_probe_age_current(tmp_path: Path) -> None:
    metrics_dir = tmp_path / "metrics"
    server, redis_server = start_stack(metrics_dir)
    try:
        pids = server.worker_pids()
        # No scrape at all: every worker has set its own gauges.
        wait_until(lambda: all(worker_value(metrics_dir, pid, "notifier_subscriber_up") == 1 for pid in pids), 10,
                   message="each worker's subscriber_up = 1 without a scrape")
        assert all((worker_value(metrics_dir, pid, "notifier_subscriber_probe_age_seconds") or 0) < 5 for pid in pids)

        redis_server.kill()
        outage_started = time.monotonic()

        def all_unready() -> bool:
            return all(requests.get(server.url + "/readyz", timeout=2).status_code == 503 for _ in range(8))

        wait_until(all_unready, 15, interval=0.1, message="/readyz 503 on every worker with Redis down")
        body = requests.get(server.url + "/readyz", timeout=2).json()
        assert body["status"] == "unavailable" and "subscriber" in body["reason"]
        # Liveness never depends on Redis; /metrics still answers.
        assert all(requests.get(server.url + "/livez", timeout=2).status_code == 200 for _ in range(8))
        # Each worker's probe age grows during the outage, with nobody scraping it.
        wait_until(lambda: all((worker_value(metrics_dir, pid, "notifier_subscriber_probe_age_seconds") or 0) >= 2
                               and worker_value(metrics_dir, pid, "notifier_subscriber_up") == 0 for pid in pids), 15,
                   message="each worker's probe age to grow past 2 s")
        assert requests.get(server.url + "/metrics", timeout=5).status_code == 200

        redis_server.start()  # same port
        server.wait_ready(timeout=30)
        recovered_in = time.monotonic() - outage_started
        wait_until(lambda: all((worker_value(metrics_dir, pid, "notifier_subscriber_probe_age_seconds") or 99) < 2
                               and worker_value(metrics_dir, pid, "notifier_subscriber_up") == 1 for pid in pids), 10,
                   message="each worker's probe age back under 2 s")
        samples = scrape(server)
        assert value(samples, "notifier_subscriber_reconnects_total") >= 2, "both workers reconnected"
        assert value(samples, "notifier_subscriber_up", shard="primary") == 1
        assert recovered_in < 45
    finally:
        server.stop()
        redis_server.stop()


# ---------------------------------------------------------------------------
# logs


def json_lines(output: str) -> list[dict]:
    lines = []
    for line in output.splitlines():
        if line.startswith("{"):
            try:
                lines.append(json.loads(line))
            except ValueError:
                pass
    return lines


def test_logs_are_json_with_request_ids_and_never_a_token(stack) -> None:
    server, redis_server = stack
    user_token = tokens.token("logcarol")
    publisher_token = tokens.publisher("logbilling")
    # A token in the query string is refused, and must not be logged either.
    refused = get_refusal(server.url + "/v1/events", params={"access_token": user_token}, timeout=5)
    assert refused.status_code == 401
    generated = refused.headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    # In the header and in the cookie.
    stream = SSEConnection(server.url + "/v1/events", {**tokens.bearer(user_token), "X-Request-ID": "req-stream-1"})
    assert stream.status == 200 and stream.headers["x-request-id"] == "req-stream-1"
    stream.events(0.05)
    publish_response = requests.post(server.url + "/v1/publish", json={"user_id": "logcarol", "message": "hi"},
                                     headers={**tokens.bearer(publisher_token), "X-Request-ID": "req-publish-1"}, timeout=5)
    assert publish_response.status_code == 202 and publish_response.headers["X-Request-ID"] == "req-publish-1"
    assert [e.json()["message"] for e in stream.collect(1, 5)] == ["hi"]
    stream.close()
    cookie = requests.get(server.url + "/v1/notifications", cookies={"notifier_access": user_token}, timeout=5)
    assert cookie.status_code == 200

    def stream_line() -> dict | None:
        for line in json_lines(server.log()):
            if line.get("msg") == "stream" and line.get("request_id") == "req-stream-1":
                return line
        return None

    line = wait_until(stream_line, 10, message="the stream's access line at close")
    assert line["user_id"] == "logcarol" and line["events_sent"] == 1 and line["reason"] == "client_gone"
    assert line["duration_ms"] > 0 and line["path"] == "/v1/events"
    lines = json_lines(server.log())
    publish_lines = [item for item in lines if item.get("request_id") == "req-publish-1"]
    assert [(item["msg"], item["status"], item["path"]) for item in publish_lines] == [("request", 202, "/v1/publish")]
    refused_lines = [item for item in lines if item.get("request_id") == generated]
    assert [(item["status"], item["path"]) for item in refused_lines] == [(401, "/v1/events")]

    output = server.log()
    for secret in (user_token, publisher_token, tokens.SECRET):
        assert secret not in output
        # Not even a recognisable piece (a token's signature part).
        assert secret.rsplit(".", 1)[-1] not in output


def test_unexpected_errors_are_json_500_without_a_stack_trace(stack) -> None:
    server, redis_server = stack
    # Another program wrote a plain string under a user's history key: reading
    # it fails (WRONGTYPE), an unexpected error, not a client's mistake. (A
    # corrupt entry inside the stream is skipped and counted instead: see
    # tests/api/test_bounds.py.)
    client = redis_server.client()
    newest = publish(server, {"user_id": "someone-else", "message": "sets the sequence"})["published"][0]["id"]
    newest_ms = int(newest.split("-")[0])
    client.set("notifier:history:user:mallory", "not a stream")
    user_token = tokens.token("mallory")
    for path, headers in (("/v1/notifications", {}), ("/v1/events", {"Last-Event-ID": f"{newest_ms - 5000}-0"})):
        response = get_refusal(server.url + path, headers={**tokens.bearer(user_token), **headers,
                                                           "X-Request-ID": "req-boom" + path.replace("/", "-")}, timeout=5)
        assert response.status_code == 500, (path, response.status_code, response.text)
        assert response.json() == {"error": {"code": "internal_error", "message": "internal server error"}}
        assert "Traceback" not in response.text and "File " not in response.text
    # The trace is in the log, as JSON, tied to the request id.
    errors = [line for line in json_lines(server.log()) if line.get("msg") == "unhandled error"]
    assert errors and all("Traceback" in line.get("exc", "") for line in errors)
    assert user_token not in server.log()
    # A failed stream request does not leave its subscription behind.
    wait_until(lambda: dict(client.pubsub_numsub("notifier:user:mallory"))[b"notifier:user:mallory"] == 0, 5,
               message="mallory's channel to be released")
    client.delete("notifier:history:user:mallory")
