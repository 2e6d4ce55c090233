"""Publishing from the host app's own views, in the same process: no HTTP hop,
whatever the broker (the embedded one included).

Same validation (``validation.py``) and the same wire format as
``POST /v1/publish``: the item is the JSON object a publisher would send,
and it goes through ``core.publish``.

``after_request=True`` holds the notifications until the request is over and
sends them only if it succeeded: no exception and a status below 400. A view
that marks an order shipped and then fails (its transaction rolled back, a
500) must not have told the user it shipped. Validation happens at once, so
a bad notification fails in the view that made it, not silently later.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from flask import Flask, Response, after_this_request, g, has_request_context

from .events import Notification, Published, utc_timestamp
from .validation import validate_notification

if TYPE_CHECKING:  # pragma: no cover
    from .state import NotifierState

log = logging.getLogger("notifier.inprocess")

_PENDING = "_notifier_deferred"  # on flask.g: [(state, notifications)]
_STATUS = "_notifier_status"  # on flask.g: the response status, once known


def target_item(target: str, value: Any, message: str, type: str | None,
                data: Mapping[str, Any] | None) -> dict[str, Any]:
    """The publish object ``POST /v1/publish`` would receive."""
    item: dict[str, Any] = {target: value, "message": message}
    if type is not None:
        item["type"] = type
    if data is not None:
        item["data"] = dict(data)
    return item


def publish_item(state: NotifierState, item: dict[str, Any], after_request: bool) -> Published | None:
    """Validate ``item`` now; publish it now, or once the request succeeded.
    Raises InvalidEvent / PayloadTooLarge at once, BrokerUnavailable when
    publishing now fails."""
    notifications = validate_notification(item, state.limits, utc_timestamp())
    if after_request:
        _defer(state, notifications)
        return None
    return _publish(state, notifications)[0]


def _publish(state: NotifierState, notifications: list[Notification]) -> list[Published]:
    state.ensure_started()  # a publish before any stream opened in this process
    published = state.core.publish(notifications)
    for item in published:
        state.metrics.events_published.labels(item.notification.target.kind).inc()
    return published


def _defer(state: NotifierState, notifications: list[Notification]) -> None:
    if not has_request_context():
        raise RuntimeError("after_request=True needs a request: publish outside one with after_request=False")
    pending = g.get(_PENDING)
    if pending is None:
        pending = []
        setattr(g, _PENDING, pending)
        after_this_request(_record_status)
    pending.append((state, notifications))


def _record_status(response: Response) -> Response:
    setattr(g, _STATUS, response.status_code)
    return response


def register_deferred_publishing(app: Flask) -> None:
    """Once per app: a teardown that sends what a successful request deferred.
    It does nothing in a request that deferred nothing. Flask's documented
    hook list rather than the decorator: ``compat.flask_sse`` may set notifier
    up in an app that is already serving (its first ``sse.publish``)."""
    if app.extensions.get("notifier.deferred"):
        return
    app.extensions["notifier.deferred"] = True
    app.teardown_request_funcs.setdefault(None, []).append(_flush)


def _flush(exc: BaseException | None) -> None:
    pending = g.pop(_PENDING, None)
    if not pending:
        return
    status = g.pop(_STATUS, None)
    if exc is not None or status is None or status >= 400:
        count = sum(len(notifications) for _state, notifications in pending)
        log.info("dropped %d notifications deferred by a failed request", count,
                 extra={"status": status, "exception": type(exc).__name__ if exc else None})
        return
    for state, notifications in pending:
        try:
            _publish(state, notifications)
        except Exception:
            # The response has gone: nobody to answer with a 503. Say so loudly.
            log.exception("could not publish %d notifications after the request", len(notifications))
