"""``Notifier(app)`` / ``Notifier().init_app(app)``: the Flask extension.

Builds the core (hub, broker, history) and the metrics for one app and keeps
them in ``app.extensions["notifier"]`` (``state.py``), so a legacy Flask app can mount real-time
notifications next to its own views. Nothing happens at import time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from flask import Flask, g, request

from .broker.memory import MemoryBroker, MemoryHistory
from .channels import ChannelNames
from .config import Config
from .core import Core
from .hub import Hub, Subscription
from .logs import log_request, request_id_from
from .metrics import SubscriberGauges, process_metrics
from .state import NotifierState

log = logging.getLogger("notifier")


def names_for(config: Config) -> ChannelNames:
    """Channel and key names for this configuration (hash-tagged on a Cluster)."""
    topology = config.redis_topology
    return ChannelNames(config.redis_prefix, hash_tags=bool(topology and topology.sharded))


def build_core(config: Config, names: ChannelNames, on_evict: Callable[[Subscription], None]) -> Core:
    """The hub, the broker and the history this configuration asks for."""
    # Heartbeats and deadlines are checked 4 times per heartbeat (at most
    # once a second): each is at most that late.
    hub = Hub(on_evict=on_evict, alarm_interval=min(1.0, config.heartbeat_seconds / 4))
    if config.redis_url is None:
        memory = MemoryHistory(config.history_max_events, config.history_max_age_seconds, config.replay_max_events)
        return Core(hub, MemoryBroker(names, memory), memory)
    from .broker.redis_session import SessionSettings

    topology = config.redis_topology
    assert topology is not None
    settings = SessionSettings(config.redis_socket_timeout, config.probe_interval_seconds, config.probe_timeout_seconds)
    if topology.sharded:
        from .broker.redis_cluster import ClusterBroker
        from .broker.redis_cluster_history import ClusterHistory
        from .broker.redis_cluster_store import ClusterStore
        from .broker.redis_connect import make_cluster_client

        cluster = make_cluster_client(config.redis_url, config.redis_socket_timeout)
        cluster_store = ClusterStore(cluster, names, config.history_max_events, config.history_max_age_seconds,
                                     config.redis_min_replicas)
        cluster_history = ClusterHistory(cluster, names, config.history_max_age_seconds, config.replay_max_events,
                                         config.cluster_reorder_ms)
        return Core(hub, ClusterBroker(names, cluster_store, settings), cluster_history)
    from .broker.redis import RedisBroker
    from .broker.redis_history import RedisHistory
    from .broker.redis_store import RedisStore, make_client

    client = make_client(config.redis_url, config.redis_socket_timeout)
    store = RedisStore(client, names, config.history_max_events, config.history_max_age_seconds,
                       config.redis_min_replicas)
    history = RedisHistory(client, names, config.history_max_age_seconds, config.replay_max_events)
    return Core(hub, RedisBroker(names, store, settings, sentinel=topology.kind == "sentinel"), history)


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
        names = names_for(config)

        def on_evict(subscription: Subscription) -> None:
            metrics.evictions.inc()
            log.info("evicted slow stream", extra={"user_id": subscription.user_id, "subscription": subscription.id})

        state = NotifierState(config, build_core(config, names, on_evict), metrics, names, SubscriberGauges(metrics))
        app.extensions["notifier"] = state
        configure_jwt(app, config, override=standalone)
        register_blueprints(app, state, standalone=standalone)
        _register_request_logging(app)
        state.start()
        if config.dev_mode:
            log.warning("DEVELOPMENT MODE: local dev secret, insecure cookies, dev login page at / - NOT FOR PRODUCTION")
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
