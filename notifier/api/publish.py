"""``POST /v1/publish``: internal services publish with publisher credentials."""

from __future__ import annotations

from collections import Counter
from typing import Any

from flask import Blueprint, Response, jsonify, request

from ..auth import authenticate_publisher
from ..errors import Forbidden, NotifierError, PayloadTooLarge, Unauthorized
from ..events import parse_publish_body, utc_timestamp
from ..extension import current_state

bp = Blueprint("notifier_publish", __name__)


def _read_body(limit: int) -> bytes:
    """The body, refusing more than ``limit`` bytes without reading it all."""
    length = request.content_length
    if length is not None and length > limit:
        raise PayloadTooLarge(f"request body is larger than {limit} bytes", field="body")
    data = request.stream.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLarge(f"request body is larger than {limit} bytes", field="body")
    return data


def _target_json(kind: str, name: str) -> dict[str, Any]:
    if kind == "user":
        return {"user_id": name}
    if kind == "topic":
        return {"topic": name}
    return {"broadcast": True}


@bp.post("/v1/publish")
def publish() -> Response:
    state = current_state()
    metrics = state.metrics
    try:
        try:
            publisher = authenticate_publisher()
        except (Unauthorized, Forbidden):
            metrics.auth_failures.labels("publish").inc()
            raise
        limits = state.limits
        body_limit = limits.max_body_bytes
        notifications = parse_publish_body(_read_body(body_limit), request.content_type, limits, utc_timestamp())
        for notification in notifications:
            publisher.check(notification.target)
        published = state.broker.publish(notifications)
    except NotifierError as exc:
        metrics.publish_errors.labels(str(exc.status)).inc()
        raise
    # One counter write per target kind, not per event (each is a locked file
    # write in multiprocess mode; a batch holds up to NOTIFIER_MAX_BATCH).
    per_kind = Counter(item.notification.target.kind for item in published)
    for kind, count in per_kind.items():
        metrics.events_published.labels(kind).inc(count)
    response = jsonify({
        "published": [
            {"id": item.id, **_target_json(item.notification.target.kind, item.notification.target.name),
             "type": item.notification.type, "receivers": item.receivers}
            for item in published
        ],
        "count": len(published),
    })
    response.status_code = 202
    return response
