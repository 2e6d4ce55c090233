"""``notifier.Publisher``: publish from a Python service straight to Redis.

Writes exactly what ``POST /v1/publish`` writes (same validation, same Lua
script, same history), so subscribers cannot tell the two apart. Plain
blocking redis-py: usable from any Python service, gevent or not.

    from notifier import Publisher
    publisher = Publisher("redis://redis:6379/0")   # or Publisher.from_config(): the service's NOTIFIER_* settings
    publisher.notify("alice", "Your order has shipped!", type="order.shipped", data={"order": 42})
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .broker.redis_store import RedisStore, make_client
from .channels import ChannelNames
from .config import Config
from .events import Notification, Published, utc_timestamp
from .validation import Limits, validate_notification


class Publisher:
    def __init__(self, redis_url: str, *, prefix: str = "notifier:", history_max_events: int = 1000,
                 history_max_age_seconds: int = 24 * 3600, socket_timeout: float = 5.0,
                 limits: Limits | None = None):
        self._client = make_client(redis_url, socket_timeout, max_connections=8)
        self._store = RedisStore(self._client, ChannelNames(prefix), history_max_events, history_max_age_seconds)
        self._limits = limits or Limits()

    @classmethod
    def from_config(cls, config: Config | None = None) -> Publisher:
        """A publisher with the service's own settings (``NOTIFIER_*`` by default):
        the same Redis, key prefix, history bounds and payload limits, so what it
        stores is what the service replays."""
        config = config or Config.from_env()
        if config.redis_url is None:
            raise ValueError("NOTIFIER_REDIS_URL is not set: the embedded broker lives inside the service; "
                             "publish over HTTP instead")
        return cls(config.redis_url, prefix=config.redis_prefix, history_max_events=config.history_max_events,
                   history_max_age_seconds=config.history_max_age_seconds, socket_timeout=config.redis_socket_timeout,
                   limits=Limits(config.max_payload_bytes, config.max_batch, config.max_recipients,
                                 config.max_data_depth))

    def _publish(self, item: dict[str, Any]) -> list[Published]:
        """Validate like the HTTP API and publish. Raises InvalidEvent /
        PayloadTooLarge on bad input and redis.RedisError when Redis fails."""
        notifications: list[Notification] = validate_notification(item, self._limits, utc_timestamp())
        return self._store.publish(notifications)

    @staticmethod
    def _item(target: dict[str, Any], message: str, type: str | None, data: Mapping[str, Any] | None) -> dict[str, Any]:
        item = dict(target, message=message, data=dict(data or {}))
        if type is not None:
            item["type"] = type
        return item

    def notify(self, user_id: str, message: str, *, type: str | None = None,
               data: Mapping[str, Any] | None = None) -> Published:
        """To one user's private channel. Returns the id and how many workers received it."""
        return self._publish(self._item({"user_id": user_id}, message, type, data))[0]

    def notify_many(self, user_ids: list[str], message: str, *, type: str | None = None,
                    data: Mapping[str, Any] | None = None) -> list[Published]:
        return self._publish(self._item({"user_ids": user_ids}, message, type, data))

    def broadcast(self, message: str, *, type: str | None = None, data: Mapping[str, Any] | None = None) -> Published:
        return self._publish(self._item({"broadcast": True}, message, type, data))[0]

    def publish_topic(self, topic: str, message: str, *, type: str | None = None,
                      data: Mapping[str, Any] | None = None) -> Published:
        return self._publish(self._item({"topic": topic}, message, type, data))[0]

    def close(self) -> None:
        self._store.close()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
