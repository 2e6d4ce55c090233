"""``POST /v1/stream-tickets``: a single-use, short-lived ticket to open one
stream from a page that cannot send the token itself (``tickets.py``)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request

from ..auth import Subscriber, authenticate_subscriber, pattern_allows
from ..errors import BadRequest, Forbidden, NotifierError, Unauthorized
from ..state import NotifierState, current_state
from ..validation import validate_topic

bp = Blueprint("notifier_tickets", __name__)


@bp.post("/v1/stream-tickets")
def create_ticket() -> Response:
    state = current_state()
    try:
        # The header only: a cookie would make this POST forgeable from another site.
        subscriber = authenticate_subscriber(("headers",))
    except (Unauthorized, Forbidden):
        state.metrics.auth_failures.labels("stream_tickets").inc()
        raise
    topics = _granted_topics(state, subscriber, _requested(request.get_data()))
    ticket = state.guards.tickets.issue(subscriber, topics)
    response = jsonify({"ticket": ticket, "expires_in": state.guards.tickets.ttl_seconds, "topics": topics})
    response.status_code = 201
    response.headers["Cache-Control"] = "no-store"
    return response


def _requested(raw: bytes) -> list[Any]:
    """The body's ``topics`` (an empty body asks for none)."""
    if not raw.strip():
        return []
    if (request.mimetype or "") != "application/json":
        raise BadRequest("the body must be JSON (Content-Type: application/json) like {\"topics\": [\"orders:42\"]}",
                         field="body")
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or set(body) - {"topics"}:
        raise BadRequest("the body must be a JSON object with only \"topics\"", field="body")
    topics = body.get("topics", [])
    if not isinstance(topics, list):
        raise BadRequest("topics must be an array of topic names", field="topics")
    return topics


def _granted_topics(state: NotifierState, subscriber: Subscriber, topics: list[Any]) -> list[str]:
    topics = list(dict.fromkeys(topics)) if all(isinstance(t, str) for t in topics) else topics
    if len(topics) > state.config.max_topics:
        raise BadRequest(f"at most {state.config.max_topics} topics per stream", field="topics")
    for topic in topics:
        try:
            validate_topic(topic, "topics")
        except NotifierError as exc:
            raise BadRequest(exc.message, field="topics") from None
        if not pattern_allows(topic, subscriber.topic_grants):
            raise Forbidden(f"your token does not grant topic {topic!r}", field="topics")
    return topics
