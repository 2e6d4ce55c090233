"""Metrics in one process (the app and the werkzeug client; the multi-worker
behaviour is in test_operations.py): the drain's disconnect reason and the
subscriber gauges each worker keeps current."""

from __future__ import annotations

import time

from notifier import create_app
from notifier.broker import Health
from notifier.metrics import SubscriberGauges, process_metrics

from .conftest import make_config
from .support import tokens


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
    assert sample("notifier_subscriber_up") == 1
    assert 29 <= sample("notifier_subscriber_probe_age_seconds") < 40
    broker.last_alive = time.time()  # a probe or a message came back
    gauges.refresh(broker)
    assert sample("notifier_subscriber_probe_age_seconds") < 5
    broker.up = False
    broker.last_alive = time.time() - 60
    gauges.refresh(broker)
    assert sample("notifier_subscriber_up") == 0
    assert sample("notifier_subscriber_probe_age_seconds") >= 59, "the age keeps growing while the subscriber is down"
