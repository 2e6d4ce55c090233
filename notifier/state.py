"""What one app needs at request time, kept in ``app.extensions["notifier"]``."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import gevent
from flask import current_app

from .admission import StreamAdmission
from .broker import RateLimiter
from .broker.memory_guards import MemoryTickets
from .channels import ChannelNames
from .config import Config
from .core import Core
from .drain import drain_streams
from .hub import Hub
from .metrics import Metrics, SubscriberGauges, UndecodableEntries
from .tickets import StreamTickets
from .validation import Limits

if TYPE_CHECKING:  # pragma: no cover
    from .identity import IdentityLoader

log = logging.getLogger("notifier")


@dataclass
class Guards:
    """What bounds a credential's use: stream tickets and the publish rate
    (``None``: unlimited). Shared across pods when they live in Redis."""

    tickets: StreamTickets = field(default_factory=lambda: StreamTickets(MemoryTickets()))
    publish_rate: RateLimiter | None = None
    close: Callable[[], None] = lambda: None


class NotifierState:
    def __init__(self, config: Config, core: Core, metrics: Metrics, names: ChannelNames, gauges: SubscriberGauges,
                 undecodable: UndecodableEntries, admission: StreamAdmission, guards: Guards | None = None):
        self.config = config
        self.core = core
        self.guards = guards or Guards()
        self.metrics = metrics
        self.names = names
        self.subscriber_gauges = gauges
        self.undecodable = undecodable
        self.admission = admission
        self.limits = Limits(config.max_payload_bytes, config.max_batch, config.max_recipients,
                             config.max_data_depth)
        self.draining = False
        self._drainer: gevent.Greenlet | None = None
        # Set by ``Notifier.init_app``: where the routes are mounted, who a
        # subscriber is when the host says so, whose JWT settings verify tokens.
        self.url_prefix = ""
        self.identity_loader: IdentityLoader | None = None
        self.jwt_mode = "none"  # set by init_app when it registers the routes that verify tokens
        self.ensure_started: Callable[[], None] = self.start

    @property
    def hub(self) -> Hub:
        return self.core.hub

    def start(self) -> None:
        """Start delivering in this process: the broker's greenlet and the
        subscriber gauges. Call in the process that serves (a worker), never
        in one that forks afterwards."""
        self.core.start()
        self.admission.leases.start()
        if self.config.uses_redis:
            # Each worker keeps its own subscriber gauges current (not only the one a scrape lands on).
            self.subscriber_gauges.start(self.core)

    def stop(self) -> None:
        self.subscriber_gauges.stop()
        self.admission.leases.stop()
        self.core.stop()
        self.guards.close()

    def drain(self, window: float | None = None) -> None:
        """Start closing every stream, spread over ``window`` seconds (see
        ``drain.py``). New streams are refused from now on (503 + Retry-After)."""
        if self.draining:
            return
        self.draining = True
        self.metrics.draining.set(1)
        window = self.config.drain_seconds if window is None else window
        self._drainer = gevent.spawn(drain_streams, self.core.hub, self.config.retry_ms, window)

    def wait_drained(self, timeout: float) -> bool:
        if self._drainer is None:
            return True
        self._drainer.join(timeout)
        return self._drainer.dead


def current_state() -> NotifierState:
    state: Any = current_app.extensions["notifier"]
    return state
