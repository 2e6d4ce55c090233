"""Metrics in one process (the app and the werkzeug client; the multi-worker
behaviour is in test_operations.py): the drain's disconnect reason and the
subscriber gauges each worker keeps current, readiness failures, publish
requests and each worker's CPU and memory."""

from __future__ import annotations

import os
import time
from pathlib import Path

from notifier import create_app
from notifier.broker import Health
from notifier.metrics import SubscriberGauges, process_metrics
from notifier.worker_resources import ResourceSampler, memory_limit_bytes, resident_bytes

from ..support import tokens
from ..support.config import make_config


def sample(name: str, **labels: str) -> float:
    return process_metrics().registry.get_sample_value(name, labels) or 0.0


def test_streams_closed_by_the_drain_count_as_shutdown() -> None:
    app = create_app(make_config())
    state = app.extensions["notifier"]
    try:
        before = sample("notifier_stream_disconnects_total", reason="shutdown")
        opened = sample("notifier_streams_open")
        response = app.test_client().get("/v1/events", headers=tokens.bearer(tokens.token("dora")), buffered=False)
        chunks = iter(response.response)
        next(chunks)
        assert sample("notifier_streams_open") == opened + 1
        state.drain(window=0)
        assert sample("notifier_draining") == 1
        assert b"".join(chunks).startswith(b"retry: ")
        assert sample("notifier_stream_disconnects_total", reason="shutdown") == before + 1
        assert sample("notifier_streams_open") == opened
    finally:
        state.metrics.draining.set(0)
        state.stop()


class Broker:
    """Just what SubscriberGauges reads: a health report (our own seam)."""

    def __init__(self) -> None:
        self.up = True
        self.reconnects = 0
        self.last_alive = 0.0

    def health(self) -> Health:
        return Health(self.up, "ok" if self.up else "subscriber down: ConnectionError", "redis", self.reconnects,
                      self.last_alive)


def test_subscriber_gauges_follow_health_reconnects_and_liveness() -> None:
    gauges = SubscriberGauges(process_metrics())
    broker = Broker()
    reconnects = sample("notifier_subscriber_reconnects_total")
    broker.reconnects = 2
    gauges.refresh(broker)
    assert sample("notifier_subscriber_reconnects_total") == reconnects + 2
    gauges.refresh(broker)
    assert sample("notifier_subscriber_reconnects_total") == reconnects + 2, "counted once"

    broker.last_alive = time.time() - 30
    gauges.refresh(broker)
    assert sample("notifier_subscriber_up", shard="primary") == 1
    assert 29 <= sample("notifier_subscriber_probe_age_seconds", shard="primary") < 40
    broker.last_alive = time.time()  # a probe or a message came back
    gauges.refresh(broker)
    assert sample("notifier_subscriber_probe_age_seconds", shard="primary") < 5
    broker.up = False
    broker.last_alive = time.time() - 60
    gauges.refresh(broker)
    assert sample("notifier_subscriber_up", shard="primary") == 0
    assert sample("notifier_subscriber_probe_age_seconds", shard="primary") >= 59, "the age keeps growing while the subscriber is down"


def test_subscriber_gauges_are_per_shard_on_a_cluster_and_a_retired_shard_reads_up() -> None:
    from notifier.broker import Health, ShardHealth

    class Sharded:
        def __init__(self) -> None:
            now = time.time()
            self.shards = (ShardHealth("10.0.0.1:6379", True, now), ShardHealth("10.0.0.2:6379", False, now - 20))

        def health(self) -> Health:
            return Health(all(s.ok for s in self.shards), "ok", "redis-cluster", 0, 0.0, self.shards)

    gauges = SubscriberGauges(process_metrics())
    source = Sharded()
    gauges.refresh(source)
    assert sample("notifier_subscriber_up", shard="10.0.0.1:6379") == 1
    assert sample("notifier_subscriber_up", shard="10.0.0.2:6379") == 0
    assert 19 <= sample("notifier_subscriber_probe_age_seconds", shard="10.0.0.2:6379") < 30
    source.shards = source.shards[:1]  # the second shard's channels left (or its master failed over)
    gauges.refresh(source)
    assert sample("notifier_subscriber_up", shard="10.0.0.2:6379") == 1, "nothing to wait for: not an outage"
    assert sample("notifier_subscriber_probe_age_seconds", shard="10.0.0.2:6379") == 0


def test_readiness_failures_count_by_reason() -> None:
    app = create_app(make_config())
    state = app.extensions["notifier"]
    client = app.test_client()
    try:
        before = sample("notifier_readiness_failures_total", reason="draining")
        assert client.get("/readyz").status_code == 200
        assert sample("notifier_readiness_failures_total", reason="draining") == before
        state.drain(window=0)
        assert client.get("/readyz").status_code == 503
        assert sample("notifier_readiness_failures_total", reason="draining") == before + 1
    finally:
        state.metrics.draining.set(0)
        state.stop()


def test_publish_requests_count_accepted_and_refused_ones() -> None:
    app = create_app(make_config())
    client = app.test_client()
    try:
        before = sample("notifier_publish_requests_total")
        publisher = tokens.bearer(tokens.publisher())
        assert client.post("/v1/publish", json={"user_id": "u", "message": "m"}, headers=publisher).status_code == 202
        assert client.post("/v1/publish", json={"message": "no target"}, headers=publisher).status_code == 422
        assert client.post("/v1/publish", json={"user_id": "u", "message": "m"}).status_code == 401
        assert sample("notifier_publish_requests_total") == before + 3
    finally:
        app.extensions["notifier"].stop()


def test_resource_sampler_counts_cpu_and_memory(tmp_path: Path) -> None:
    metrics = process_metrics()
    sampler = ResourceSampler(metrics)
    cpu = sample("notifier_worker_cpu_seconds_total")
    sampler.sample()  # a new sampler counts the process's CPU since it started
    first = sample("notifier_worker_cpu_seconds_total")
    assert first > cpu
    deadline = time.process_time() + 0.05
    while time.process_time() < deadline:
        pass
    sampler.sample()
    assert sample("notifier_worker_cpu_seconds_total") >= first + 0.05
    assert sample("notifier_worker_resident_memory_bytes") > 1 << 20
    assert resident_bytes() > 1 << 20

    physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    limited, unlimited_v2, unlimited_v1 = tmp_path / "limited", tmp_path / "v2", tmp_path / "v1"
    limited.write_text("1073741824\n")
    unlimited_v2.write_text("max\n")
    unlimited_v1.write_text("9223372036854771712\n")
    assert memory_limit_bytes((str(limited),)) == min(1 << 30, physical)
    assert memory_limit_bytes((str(unlimited_v2), str(tmp_path / "missing"))) == physical
    assert memory_limit_bytes((str(unlimited_v1),)) == physical
    assert 0 < memory_limit_bytes() <= physical
