"""Metrics in one process (the app and the werkzeug client; the multi-worker
behaviour is in test_operations.py): the drain's disconnect reason and the
subscriber gauges each worker keeps current."""

from __future__ import annotations

import time

from notifier import create_app
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
        state.broker.stop()


class Broker:
    """Just what SubscriberGauges reads from a broker."""

    def __init__(self) -> None:
        self.up = True
        self.last_probe_ok = 0.0

    def ready(self) -> tuple[bool, str]:
        return (True, "ok") if self.up else (False, "subscriber down: ConnectionError")


def test_subscriber_gauges_follow_probes_and_deliveries() -> None:
    gauges = SubscriberGauges(process_metrics())
    broker = Broker()
    reconnects = sample("notifier_subscriber_reconnects_total")
    gauges.on_broker_event("reconnect", "")
    assert sample("notifier_subscriber_reconnects_total") == reconnects + 1

    broker.last_probe_ok = time.time() - 30
    gauges.refresh(broker)
    assert sample("notifier_subscriber_up") == 1
    assert 29 <= sample("notifier_subscriber_probe_age_seconds") < 40
    # A delivered message proves the connection as well as a probe does.
    gauges.on_broker_event("delivered", "notifier:user:x")
    gauges.refresh(broker)
    assert sample("notifier_subscriber_probe_age_seconds") < 5
    broker.up = False
    gauges.refresh(broker)
    assert sample("notifier_subscriber_up") == 0
