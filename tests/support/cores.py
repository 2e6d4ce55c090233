"""A worker's core (hub, broker, history) as the service wires it, for tests
that drive it without HTTP. The pytest process is not monkey-patched, so the
broker's greenlet runs only while a test waits with ``pump_until``."""

from __future__ import annotations

import time
from typing import Any

import gevent

from notifier.channels import ChannelNames
from notifier.config import Config
from notifier.core import Core
from notifier.events import BROADCAST, Notification, Target
from notifier.extension import build_core, names_for
from notifier.hub import Subscription
from notifier.validation import Limits, validate_notification

TS = "2026-01-01T00:00:00.000Z"


def pump_until(predicate: Any, timeout: float = 5.0) -> bool:
    """Let the broker's greenlet run until ``predicate()`` holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        gevent.sleep(0.01)
    raise AssertionError("condition not met in time")


def make_core(redis_url: str | None, prefix: str, **settings: Any) -> Core:
    """A started core; with ``redis_url`` on Redis, else the embedded broker. Waits until it is ready."""
    base: dict[str, Any] = dict(redis_url=redis_url, redis_prefix=prefix, probe_interval_seconds=0.5,
                                probe_timeout_seconds=1.0)
    base.update(settings)
    config = Config.for_testing(**base)
    core = build_core(config, names_for(config), lambda subscription: None)
    core.start()
    pump_until(lambda: core.health().ok)
    return core


def note(target: Target, message: str = "m") -> list[Notification]:
    item: dict[str, Any] = {"message": message}
    if target == BROADCAST:
        item["broadcast"] = True
    elif target.kind == "user":
        item["user_id"] = target.name
    else:
        item["topic"] = target.name
    return validate_notification(item, Limits(), TS)


def subscribe(core: Core, names: ChannelNames, user: str, topics: list[str] | None = None) -> Subscription:
    subscription = Subscription(user, names.for_subscriber(user, topics or []), 100)
    core.subscribe(subscription)
    return subscription
