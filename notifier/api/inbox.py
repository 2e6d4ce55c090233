"""The inbox: ``POST /v1/notifications/read`` moves a user's read marker
(``{"up_to": "<id>"}``: everything up to it) or marks single ids
(``{"ids": [...]}``), and tells the user's other tabs and devices with an
``event: read`` on their stream. ``GET /v1/notifications`` reports the
unread count (``unread_count``).

Cookie-authenticated and state-changing, so guarded against cross-site
requests: the body must be JSON (a cross-site form cannot send it without a
CORS preflight notifier never grants), an ``Origin`` must be this host's,
and with notifier's own cookie flask-jwt-extended's double-submit CSRF check
applies (``X-CSRF-TOKEN``; the browser helper sends it).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Response, request

from ..errors import BadRequest, Forbidden, InvalidEvent, UnsupportedMedia
from ..events import EventId, ReadState, format_event_id, parse_event_id, utc_timestamp
from ..state import NotifierState, current_state
from ..validation import validate_notification
from .events import authenticate

bp = Blueprint("notifier_inbox", __name__)

READ_EVENT = "read"  # the event type that moves the marker on other tabs; not a notification
MAX_IDS = 100
UNREAD_SCAN = 200  # the unread count looks at this many newest events (and at most a page's bytes)


def unread_count(state: NotifierState, user_id: str, read: ReadState) -> int:
    channels = state.names.for_subscriber(user_id, [])
    items = state.core.history.recent(channels, None, UNREAD_SCAN, state.config.page_max_bytes)
    return sum(1 for item in items if item.type != READ_EVENT and not read.is_read(item.id))


def read_state(state: NotifierState, user_id: str) -> ReadState:
    markers = state.core.read_markers
    return markers.state(user_id) if markers is not None else ReadState()


def _same_origin() -> None:
    origin = request.headers.get("Origin")
    if origin is not None and urlsplit(origin).netloc != request.host:
        raise Forbidden("cross-origin request refused", field="Origin")


def _body() -> dict[str, Any]:
    if (request.mimetype or "") != "application/json":
        raise UnsupportedMedia("Content-Type must be application/json")
    try:
        body = json.loads(request.get_data(cache=False) or b"null")
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("body is not valid JSON", field="body") from None
    if not isinstance(body, dict) or len(body) != 1 or not set(body) <= {"up_to", "ids"}:
        raise InvalidEvent('give exactly one of {"up_to": "<id>"} or {"ids": ["<id>", ...]}', field="body")
    return body


def _event_id(value: Any, field: str, last: EventId) -> EventId:
    parsed = parse_event_id(value) if isinstance(value, str) else None
    if parsed is None:
        raise InvalidEvent(f"{field} must be an event id like 1700000000000-0", field=field)
    if parsed > last:
        raise InvalidEvent(f"{field} is newer than any event", field=field)
    return parsed


@bp.post("/v1/notifications/read")
def mark_read() -> Response:
    state = current_state()
    subscriber = authenticate(state, "notifications")
    _same_origin()
    body = _body()
    markers = state.core.read_markers
    if markers is None:
        raise BadRequest("this server keeps no read state", field="body")
    last = state.core.history.last_id()
    if "up_to" in body:
        read = markers.mark_up_to(subscriber.user_id, _event_id(body["up_to"], "up_to", last))
        change: dict[str, Any] = {"up_to": format_event_id(read.up_to)}
    else:
        ids = body["ids"]
        if not isinstance(ids, list) or not 1 <= len(ids) <= MAX_IDS:
            raise InvalidEvent(f"ids must be an array of 1 to {MAX_IDS} event ids", field="ids")
        parsed = [_event_id(value, "ids", last) for value in ids]
        read = markers.mark_ids(subscriber.user_id, parsed)
        change = {"up_to": format_event_id(read.up_to), "ids": [format_event_id(i) for i in parsed]}
    # The user's other tabs and devices: the marker moved.
    item = {"user_id": subscriber.user_id, "type": READ_EVENT, "message": "", "data": change}
    state.core.publish(validate_notification(item, state.limits, utc_timestamp()))
    reply = {**change, "unread_count": unread_count(state, subscriber.user_id, read)}
    response = Response(json.dumps(reply), status=200, mimetype="application/json")
    response.headers["Cache-Control"] = "no-store"
    return response
