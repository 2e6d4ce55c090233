"""``Notifier(app)`` / ``Notifier().init_app(app)``: the Flask extension.

Builds the core (hub, broker, history) and the metrics for one app and keeps
them in ``app.extensions["notifier"]`` (``state.py``), so a legacy Flask app can mount real-time
notifications next to its own views. Nothing happens at import time.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

from flask import Flask, current_app, g, has_app_context, request

from .admission import StreamAdmission
from .broker import StreamLeases
from .broker.memory import MemoryBroker, MemoryHistory, MemoryStreamLeases
from .broker.memory_guards import MemoryRateLimiter, MemoryTickets
from .broker.memory_read import MemoryReadMarkers
from .channels import ChannelNames
from .config import Config
from .core import Core
from .errors import NOSNIFF
from .events import Published
from .hub import Hub, Subscription
from .identity import IdentityLoader
from .inprocess import publish_item, register_deferred_publishing, target_item
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
        markers = MemoryReadMarkers(config.history_max_age_seconds, config.history_max_events)
        return Core(hub, MemoryBroker(names, memory), memory, read_markers=markers)
    return _redis_core(config, names, hub, on_undecodable)


def _redis_core(config: Config, names: ChannelNames, hub: Hub, on_undecodable: Callable[[], None] | None) -> Core:
    """One Redis or Sentinel (one pub/sub connection), or a Cluster (one per shard)."""
    from .broker.redis_read import RedisReadMarkers
    from .broker.redis_session import SessionSettings

    topology = config.redis_topology
    assert topology is not None and config.redis_url is not None
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
        cluster_markers = RedisReadMarkers(cluster, names, config.history_max_age_seconds, config.history_max_events)
        return Core(hub, ClusterBroker(names, cluster_store, settings), cluster_history, read_markers=cluster_markers)
    from .broker.redis import RedisBroker
    from .broker.redis_history import RedisHistory
    from .broker.redis_store import RedisStore, make_client

    client = make_client(config.redis_url, config.redis_socket_timeout)
    store = RedisStore(client, names, config.history_max_events, config.history_max_age_seconds,
                       config.redis_min_replicas)
    history = RedisHistory(client, names, config.history_max_age_seconds, config.replay_max_events,
                           config.replay_max_bytes, on_undecodable)
    read_markers = RedisReadMarkers(client, names, config.history_max_age_seconds, config.history_max_events)
    return Core(hub, RedisBroker(names, store, settings, sentinel=topology.kind == "sentinel"), history,
                read_markers=read_markers)


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
    """Real-time notifications for a Flask app: ``Notifier(app)`` or
    ``notifier = Notifier(); notifier.init_app(app)``.

    Mounted in a host app (anything but ``create_app``): the routes live under
    ``url_prefix``; request logging and the start hook run for notifier's own
    routes only; the host's error handlers, hooks, logging and (``jwt``, see
    ``auth.configure_jwt``) its flask-jwt-extended settings stay as they were.
    Publish from the host's views with ``notify`` / ``broadcast`` /
    ``publish_topic`` (``inprocess.py``).
    """

    def __init__(self, app: Flask | None = None, config: Config | None = None, *, url_prefix: str = "",
                 jwt: str = "auto", identity_loader: IdentityLoader | None = None):
        self.config = config
        self.url_prefix = url_prefix
        self.jwt = jwt
        self._identity_loader = identity_loader
        self._states: list[NotifierState] = []
        if app is not None:
            self.init_app(app, config)

    def init_app(self, app: Flask, config: Config | None = None, *, url_prefix: str | None = None,
                 jwt: str | None = None, standalone: bool = False, api: bool = True) -> NotifierState:
        """Build the core into ``app.extensions["notifier"]`` and register the
        routes (``api=False``: none, for a caller with its own routes and
        its own idea of who may stream, like ``compat.flask_sse``; no JWT
        setting is touched then). Starts nothing (``lifecycle.py``)."""
        from .api import register_blueprints
        from .auth import configure_jwt

        config = config or self.config or Config.from_env()
        prefix = normalized_prefix(self.url_prefix if url_prefix is None else url_prefix)
        metrics = process_metrics()
        names = names_for(config)

        def on_evict(subscription: Subscription) -> None:
            metrics.evictions.inc()
            log.info("evicted slow stream", extra={"user_id": subscription.user_id, "subscription": subscription.id})

        undecodable = UndecodableEntries(metrics)
        core = build_core(config, names, on_evict, undecodable)
        state = NotifierState(config, core, metrics, names, SubscriberGauges(metrics), undecodable,
                              build_admission(config, names), build_guards(config))
        state.url_prefix = prefix
        state.identity_loader = self._identity_loader
        if api:
            state.jwt_mode = configure_jwt(app, config, mode="notifier" if standalone else (jwt or self.jwt))
        app.extensions["notifier"] = state
        scopes = register_blueprints(app, state, standalone=standalone, url_prefix=prefix) if api else []
        # A host's own routes get none of notifier's hooks: scoped to notifier's blueprints.
        hook_scopes: list[str | None] = [None] if standalone else list(scopes)
        _register_request_logging(app, hook_scopes)
        register_deferred_publishing(app)
        # In the process that serves, never in a gunicorn master that preloads the app and forks.
        state.ensure_started = start_when_serving(app, state.start, state.drain, hook_scopes)
        self._states.append(state)
        if config.dev_mode and standalone:
            log.warning("DEVELOPMENT MODE: local dev secret, insecure cookies, dev login page at / - NOT FOR PRODUCTION")
        return state

    # -- who is asking -----------------------------------------------------------

    def identity_loader(self, loader: IdentityLoader) -> IdentityLoader:
        """Decorator: subscribers are who ``loader`` says (from the host's own
        session), instead of a JWT. It returns None (401), a user id, or an
        ``Identity`` with the topics granted."""
        self._identity_loader = loader
        for state in self._states:
            state.identity_loader = loader
        return loader

    # -- publishing from the host's views ----------------------------------------

    def _state(self) -> NotifierState:
        if has_app_context() and "notifier" in current_app.extensions:
            state: NotifierState = current_app.extensions["notifier"]
            return state
        if len(self._states) == 1:
            return self._states[0]
        raise RuntimeError("no app: call inside an app context (or init this Notifier with exactly one app)")

    def notify(self, user_id: str, message: str, *, type: str | None = None, data: Mapping[str, Any] | None = None,
               after_request: bool = False) -> Published | None:
        """Publish to one user, in this process (no HTTP hop), validated like
        ``POST /v1/publish``. ``after_request=True``: sent once the current
        request has succeeded (status below 400, no exception), else dropped;
        returns None then."""
        return publish_item(self._state(), target_item("user_id", user_id, message, type, data), after_request)

    def broadcast(self, message: str, *, type: str | None = None, data: Mapping[str, Any] | None = None,
                  after_request: bool = False) -> Published | None:
        return publish_item(self._state(), target_item("broadcast", True, message, type, data), after_request)

    def publish_topic(self, topic: str, message: str, *, type: str | None = None,
                      data: Mapping[str, Any] | None = None, after_request: bool = False) -> Published | None:
        return publish_item(self._state(), target_item("topic", topic, message, type, data), after_request)


def normalized_prefix(prefix: str) -> str:
    """``"realtime/"`` -> ``"/realtime"``; ``""`` and ``"/"`` -> ``""``."""
    prefix = (prefix or "").strip()
    if prefix in ("", "/"):
        return ""
    if any(c in prefix for c in "?#") or "//" in prefix:
        raise ValueError(f"url_prefix must be a plain path like '/realtime', not {prefix!r}")
    return "/" + prefix.strip("/")


def _register_request_logging(app: Flask, scopes: list[str | None]) -> None:
    """The request id and the access line, for each scope (None: the whole app,
    else a blueprint's name). Uses Flask's documented per-blueprint hook lists."""

    def _start() -> None:
        g.notifier_request_id = request_id_from(request.headers.get("X-Request-ID"))
        g.notifier_started = time.monotonic()

    def _finish(response: Any) -> Any:
        request_id = getattr(g, "notifier_request_id", None)
        if request_id:
            response.headers["X-Request-ID"] = request_id
        response.headers.setdefault(*NOSNIFF)
        if not getattr(g, "notifier_stream", False):
            log_request(request_id, request.method, request.path, response.status_code,
                        getattr(g, "notifier_started", time.monotonic()), request.remote_addr)
        return response

    registered = app.extensions.setdefault("notifier.request_logging", set())
    for scope in scopes:
        if scope in registered:
            continue
        registered.add(scope)
        app.before_request_funcs.setdefault(scope, []).append(_start)
        app.after_request_funcs.setdefault(scope, []).append(_finish)
