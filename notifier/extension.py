"""``Notifier(app)`` / ``Notifier().init_app(app)``: the Flask extension.

Builds the core (hub, broker, history) and the metrics for one app and keeps
them in ``app.extensions["notifier"]`` (``state.py``), so a legacy Flask app can mount real-time
notifications next to its own views. Nothing happens at import time.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

from flask import Flask, g, request

from .admission import StreamAdmission
from .broker import StreamLeases
from .broker.memory import MemoryBroker, MemoryHistory, MemoryStreamLeases
from .broker.memory_guards import MemoryRateLimiter, MemoryTickets
from .channels import ChannelNames
from .config import Config
from .core import Core
from .errors import NOSNIFF
from .hub import Hub, Subscription
from .lifecycle import start_when_serving
from .logs import log_request, request_id_from
from .metrics import SubscriberGauges, UndecodableEntries, process_metrics
from .state import Guards, NotifierState
from .tickets import StreamTickets

log = logging.getLogger("notifier")


def names_for(config: Config) -> ChannelNames:
    """Channel and key names for this configuration (hash-tagged on a Cluster)."""
    topology = config.redis_topology
    return ChannelNames(config.redis_prefix, hash_tags=bool(topology and topology.sharded))


def build_core(config: Config, names: ChannelNames, on_evict: Callable[[Subscription], None],
               on_undecodable: Callable[[], None] | None = None) -> Core:
    """The hub, the broker and the history this configuration asks for."""
    # Heartbeats and deadlines are checked 4 times per heartbeat (at most
    # once a second): each is at most that late.
    hub = Hub(on_evict=on_evict, alarm_interval=min(1.0, config.heartbeat_seconds / 4),
              write_timeout=config.write_timeout_seconds)
    if config.redis_url is None:
        memory = MemoryHistory(config.history_max_events, config.history_max_age_seconds, config.replay_max_events,
                               config.replay_max_bytes)
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
                                         config.cluster_reorder_ms, config.replay_max_bytes, on_undecodable)
        return Core(hub, ClusterBroker(names, cluster_store, settings), cluster_history)
    from .broker.redis import RedisBroker
    from .broker.redis_history import RedisHistory
    from .broker.redis_store import RedisStore, make_client

    client = make_client(config.redis_url, config.redis_socket_timeout)
    store = RedisStore(client, names, config.history_max_events, config.history_max_age_seconds,
                       config.redis_min_replicas)
    history = RedisHistory(client, names, config.history_max_age_seconds, config.replay_max_events,
                           config.replay_max_bytes, on_undecodable)
    return Core(hub, RedisBroker(names, store, settings, sentinel=topology.kind == "sentinel"), history)


def command_client(config: Config, max_connections: int = 16) -> Any:
    """A small client of its own for one-key commands and scripts (stream
    leases, tickets, rate limits): one Redis, the Sentinel master, or the
    Cluster, as the URL says."""
    from .broker.redis_connect import make_client, make_cluster_client

    assert config.redis_url is not None and config.redis_topology is not None
    if config.redis_topology.sharded:
        return make_cluster_client(config.redis_url, config.redis_socket_timeout, max_connections)
    return make_client(config.redis_url, config.redis_socket_timeout, max_connections)


def build_admission(config: Config, names: ChannelNames) -> StreamAdmission:
    """The per-worker and per-user stream caps; the user's count lives in
    Redis when there is one, so it holds across pods."""
    leases: StreamLeases
    if config.redis_url is None:
        leases = MemoryStreamLeases()
    else:
        from .broker.redis_leases import RedisStreamLeases

        client = command_client(config)
        leases = RedisStreamLeases(client, names, config.stream_lease_seconds)
    retry_after = max(1, math.ceil(config.retry_ms / 1000))
    return StreamAdmission(leases, config.max_streams_per_user, config.max_streams_per_worker, retry_after)


def build_guards(config: Config) -> Guards:
    """Stream tickets and the publish rate limit: in Redis when there is one
    (a ticket is redeemable on any pod, a publisher's rate is counted across
    all of them), else in this process."""
    if config.redis_url is None:
        limiter = MemoryRateLimiter(config.publish_rate, config.publish_burst) if config.publish_rate else None
        return Guards(StreamTickets(MemoryTickets()), limiter)
    from .broker.redis_connect import close_client
    from .broker.redis_guards import RedisRateLimiter, RedisTickets

    client = command_client(config)
    rate = RedisRateLimiter(client, config.redis_prefix, config.publish_rate, config.publish_burst) if config.publish_rate else None
    return Guards(StreamTickets(RedisTickets(client, config.redis_prefix)), rate, lambda: close_client(client))


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

        undecodable = UndecodableEntries(metrics)
        core = build_core(config, names, on_evict, undecodable)
        state = NotifierState(config, core, metrics, names, SubscriberGauges(metrics), undecodable,
                              build_admission(config, names), build_guards(config))
        app.extensions["notifier"] = state
        configure_jwt(app, config, override=standalone)
        register_blueprints(app, state, standalone=standalone)
        _register_request_logging(app)
        # In the process that serves, never in a gunicorn master that preloads the app and forks.
        start_when_serving(app, state.start, state.drain)
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
        response.headers.setdefault(*NOSNIFF)
        if not getattr(g, "notifier_stream", False):
            log_request(request_id, request.method, request.path, response.status_code,
                        getattr(g, "notifier_started", time.monotonic()), request.remote_addr)
        return response
