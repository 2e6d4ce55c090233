"""The configuration tests start from: the test secret, short heartbeats."""

from __future__ import annotations

from notifier.config import Config

from .tokens import SECRET


def make_config(**overrides: object) -> Config:
    base = dict(jwt_secret=SECRET, heartbeat_seconds=0.2, retry_ms=100)
    base.update(overrides)
    return Config.for_testing(**base)  # type: ignore[arg-type]
