"""``Notifier(app)`` / ``Notifier().init_app(app)``: the Flask extension.

Builds the hub, the broker and the metrics for one app and keeps them in
``app.extensions["notifier"]``, so a legacy Flask app can mount real-time
notifications next to its own views. Nothing happens at import time.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any

import gevent
from flask import Flask, current_app, g, request

from .broker import Broker
from .broker.memory import MemoryBroker
from .channels import ChannelNames
from .config import Config
from .events import Limits, retry
from .hub import CloseReason, Hub, Subscription
from .lifecycle import start_when_serving
from .logs import log_request, request_id_from
from .metrics import Metrics, SubscriberGauges, process_metrics

log = logging.getLogger("notifier")


class NotifierState:
    """Everything one app needs at request time."""

    def __init__(self, config: Config, hub: Hub, broker: Broker, metrics: Metrics, names: ChannelNames):
        self.config = config
        self.hub = hub
        self.broker = broker
        self.metrics = metrics
        self.names = names
        self.limits = Limits(config.max_payload_bytes, config.max_batch, config.max_recipients)
        self.draining = False
        self.subscriber_gauges: SubscriberGauges | None = None
        self._drainer: gevent.Greenlet | None = None

    def drain(self, window: float | None = None) -> None:
        """Start closing every stream, spread over ``window`` seconds, each with a
        jittered ``retry:`` so clients come back elsewhere in a spread, not a
        stampede. New streams are refused from now on (503 + Retry-After)."""
        if self.draining:
            return
        self.draining = True
        self.metrics.draining.set(1)
        window = self.config.drain_seconds if window is None else window
        self._drainer = gevent.spawn(self._drain, window)

    def _drain(self, window: float) -> None:
        subscriptions = self.hub.subscriptions()
        random.shuffle(subscriptions)
        log.info("draining %d streams over %.1fs", len(subscriptions), window)
        start = time.monotonic()
        count = len(subscriptions)
        for index, subscription in enumerate(subscriptions):
            due = start + window * index / max(count, 1)
            pause = due - time.monotonic()
            if pause > 0:
                gevent.sleep(pause)
            retry_ms = int(self.config.retry_ms * random.uniform(0.5, 1.5))
            subscription.farewell = retry(retry_ms)
            subscription.close(CloseReason.SHUTDOWN)
        # Streams that arrived on keep-alive connections during the drain.
        self.hub.close_all(CloseReason.SHUTDOWN)
        log.info("drain finished in %.1fs", time.monotonic() - start)

    def wait_drained(self, timeout: float) -> bool:
        if self._drainer is None:
            return True
        self._drainer.join(timeout)
        return self._drainer.dead

    def on_evict(self, subscription: Subscription) -> None:
        self.metrics.evictions.inc()
        log.info("evicted slow stream", extra={"user_id": subscription.user_id, "subscription": subscription.id})


def build_broker(config: Config, hub: Hub, names: ChannelNames, metrics: Metrics,
                 gauges: SubscriberGauges | None = None) -> Broker:
    if config.redis_url is None:
        return MemoryBroker(hub, names, config.history_max_events, config.history_max_age_seconds,
                            config.replay_max_events)
    from .broker.redis import RedisBroker

    on_event = (gauges or SubscriberGauges(metrics)).on_broker_event

    return RedisBroker(
        hub, names, config.redis_url,
        socket_timeout=config.redis_socket_timeout,
        history_max_events=config.history_max_events,
        history_max_age_seconds=config.history_max_age_seconds,
        replay_max_events=config.replay_max_events,
        probe_interval=config.probe_interval_seconds,
        probe_timeout=config.probe_timeout_seconds,
        on_event=on_event,
    )


class Notifier:
    def __init__(self, app: Flask | None = None, config: Config | None = None):
        self.config = config
        if app is not None:
            self.init_app(app, config)

    def init_app(self, app: Flask, config: Config | None = None, *, standalone: bool = False) -> NotifierState:
        from .api import register_blueprints
        from .auth import configure_jwt

        config = config or self.config or Config.from_env()
        metrics = process_metrics()
        names = ChannelNames(config.redis_prefix)
        state: NotifierState
        # Heartbeats and deadlines are checked 4 times per heartbeat (at most
        # once a second): each is at most that late.
        hub = Hub(on_evict=lambda sub: state.on_evict(sub), alarm_interval=min(1.0, config.heartbeat_seconds / 4))
        gauges = SubscriberGauges(metrics)
        broker = build_broker(config, hub, names, metrics, gauges)
        state = NotifierState(config, hub, broker, metrics, names)
        state.subscriber_gauges = gauges
        app.extensions["notifier"] = state
        configure_jwt(app, config, override=standalone)
        register_blueprints(app, state, standalone=standalone)
        _register_request_logging(app)

        def start() -> None:
            broker.start()
            if config.uses_redis:
                # Each worker keeps its own subscriber gauges current (not only the one a scrape lands on).
                gauges.start(broker)

        # In the process that serves, never in a gunicorn master that preloads the app and forks.
        start_when_serving(app, start, state.drain)
        if config.dev_mode:
            log.warning("DEVELOPMENT MODE: local dev secret, insecure cookies, dev login page at / - NOT FOR PRODUCTION")
        return state


def current_state() -> NotifierState:
    state: Any = current_app.extensions["notifier"]
    return state


def _register_request_logging(app: Flask) -> None:
    if app.extensions.get("notifier.request_logging"):
        return
    app.extensions["notifier.request_logging"] = True

    @app.before_request
    def _start() -> None:
        g.notifier_request_id = request_id_from(request.headers.get("X-Request-ID"))
        g.notifier_started = time.monotonic()

    @app.after_request
    def _finish(response: Any) -> Any:
        request_id = getattr(g, "notifier_request_id", None)
        if request_id:
            response.headers["X-Request-ID"] = request_id
        if not getattr(g, "notifier_stream", False):
            log_request(request_id, request.method, request.path, response.status_code,
                        getattr(g, "notifier_started", time.monotonic()), request.remote_addr)
        return response
