"""``GET /v1/events`` (the SSE stream) and ``GET /v1/notifications`` (recent
notifications for page load)."""

from __future__ import annotations

import functools
import json
import random
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Response, g, request

from ..auth import Subscriber, authenticate_subscriber, pattern_allows
from ..core import Opening
from ..errors import BadRequest, Draining, Forbidden, NotifierError, Unauthorized
from ..events import ZERO_ID, Delivery, EventId, encode, format_event_id, parse_event_id
from ..hub import CloseReason, Subscription
from ..identity import subscriber_from
from ..logs import access_log
from ..state import NotifierState, current_state
from ..stream import SSE_HEADERS, StreamPlan, client_socket, event_stream, shutdown_socket
from ..validation import validate_topic

bp = Blueprint("notifier_events", __name__)

DEADLINE_JITTER = 0.15  # streams end between 85% and 100% of their maximum age


def _requested_topics(state: NotifierState, subscriber: Subscriber) -> list[str]:
    topics = list(dict.fromkeys(request.args.getlist("topic")))
    if len(topics) > state.config.max_topics:
        raise BadRequest(f"at most {state.config.max_topics} topics per stream", field="topic")
    for topic in topics:
        try:
            validate_topic(topic)
        except NotifierError as exc:
            raise BadRequest(exc.message, field="topic") from None
        if not pattern_allows(topic, subscriber.topic_grants):
            raise Forbidden(f"your token does not grant topic {topic!r}", field="topic")
    return topics


def authenticate(state: NotifierState, endpoint: str) -> Subscriber:
    """The host's identity loader when it has one, else a user's JWT."""
    try:
        ticket = request.args.get("ticket") if endpoint == "events" else None
        if ticket is not None:
            # A ticket is the stream's whole credential: a header or cookie beside it is not looked at.
            return state.guards.tickets.redeem(ticket)
        if state.identity_loader is not None:
            return subscriber_from(state.identity_loader())
        return authenticate_subscriber()
    except (Unauthorized, Forbidden):
        state.metrics.auth_failures.labels(endpoint).inc()
        raise


def _reset_frame(state: NotifierState, reason: str, resume_from: EventId) -> bytes:
    """``event: reset`` tells the page it missed events it cannot get from the
    stream (native EventSource cannot read response headers). Its id moves the
    browser's Last-Event-ID forward, so the next reconnect does not reset again."""
    state.metrics.resets.labels(reason).inc()
    body = json.dumps({"reason": reason, "resume_from": format_event_id(resume_from)})
    return encode(body, event_id=format_event_id(resume_from), event="reset")


def refuse_while_draining(state: NotifierState) -> None:
    if state.draining:
        raise Draining(max(1, state.config.retry_ms // 1000))


@bp.get("/v1/events")
def events() -> Response:
    state = current_state()
    try:
        refuse_while_draining(state)
        subscriber = authenticate(state, "events")
        topics = _requested_topics(state, subscriber)
    except NotifierError as exc:
        state.metrics.stream_rejections.labels(str(exc.status)).inc()
        raise
    channels = state.names.for_subscriber(subscriber.user_id, topics)
    return open_stream(state, StreamRequest(subscriber.user_id, channels, subscriber.expires_at))


Reframe = Callable[[Delivery], bytes]


@dataclass(frozen=True)
class StreamRequest:
    """Who a stream is for and what it reads, once its caller has checked
    both. ``anonymous``: counted against the worker's cap only (no user to
    count it against); ``reframe``: the bytes each event is sent as, when not
    notifier's own frame (``compat.flask_sse``)."""

    user_id: str
    channels: list[str]
    expires_at: float | None = None
    anonymous: bool = False
    reframe: Reframe | None = None


def open_stream(state: NotifierState, wanted: StreamRequest) -> Response:
    """The SSE response for a request already authenticated and authorized:
    admission, subscription with replay from ``Last-Event-ID``, the stream."""
    if request.method == "HEAD":
        # Flask routes HEAD to this view; Werkzeug never starts the body of a
        # HEAD response, so a subscription made here would never be released.
        return Response(status=200, headers=SSE_HEADERS)
    resume_text = request.headers.get("Last-Event-ID") or request.args.get("last_event_id")
    lease_user = None if wanted.anonymous else wanted.user_id
    subscription = Subscription(wanted.user_id, wanted.channels, state.config.queue_size, state.config.queue_bytes)
    try:
        lease = state.admission.admit(lease_user)
        try:
            opening = _opening_bytes(state, state.core.open(subscription, resume_text), wanted.reframe)
        except BaseException:
            state.admission.release(lease_user, lease)
            raise
    except NotifierError as exc:
        state.metrics.stream_rejections.labels(str(exc.status)).inc()
        raise

    plan = _plan(state, wanted, subscription, opening)
    record = StreamRecord(state, subscription, lease, getattr(g, "notifier_request_id", None), lease_user)
    return _stream_response(state, plan, record)


def _stream_response(state: NotifierState, plan: StreamPlan, record: StreamRecord) -> Response:
    """The SSE response of an admitted, subscribed stream."""
    # Not a method of the record: the subscription would hold the record that
    # holds it (a cycle, for the garbage collector to find).
    plan.subscription.on_evict = functools.partial(shutdown_socket, plan.raw_socket)
    g.notifier_stream = True
    state.metrics.stream_connects.inc()
    state.metrics.streams_open.inc()
    # No stream_with_context: the generator uses only what it was given, so
    # it does not hold a request context for the life of the stream.
    body = event_stream(plan, record)
    # The generator's own ``finally`` releases everything once it has started.
    # A body that is never iterated (a host app's after_request failing and
    # Flask answering 500 instead, a server dropping the response) never runs
    # it, and must not leave the subscription and its Redis channels behind:
    # release when the generator goes (after a failure, at the collection
    # that frees the exception's reference cycle). (Not ``response.call_on_close``: with
    # direct_passthrough Werkzeug hands the server the generator itself, so
    # nothing ever calls the response's close.) ``finish`` is idempotent; the
    # generator's first step detaches this (record.on_start): ~0.5 KiB per
    # stream that would otherwise stay for its whole life.
    record.unstarted = weakref.finalize(body, record.finish, CloseReason.CLIENT_GONE, 0)
    response = Response(body, status=200, headers=SSE_HEADERS)
    response.direct_passthrough = True
    return response


class StreamRecord:
    """What one open stream reports: its deliveries to the metrics, its end to
    the core (leave), the metrics and the access log.

    One slotted object rather than a closure per callback: a full garbage
    collection walks every object each of thousands of streams keeps, so
    every object per stream is paid for in pause time (docs/deployment.md).
    """

    __slots__ = ("finished", "lease", "lease_user", "request_id", "started", "state", "subscription", "unstarted")

    def __init__(self, state: NotifierState, subscription: Subscription, lease: str, request_id: str | None,
                 lease_user: str | None):
        self.state = state
        self.subscription = subscription
        self.lease = lease
        self.lease_user = lease_user  # None: an anonymous stream, held against the worker's cap only
        self.request_id = request_id
        self.started = time.monotonic()
        self.finished = False
        # Releases a body that is never started (_stream_response).
        self.unstarted: weakref.finalize[Any, Any] | None = None

    def on_start(self) -> None:
        if self.unstarted is not None:
            self.unstarted.detach()
            self.unstarted = None

    def on_write(self, items: list[Delivery]) -> None:
        # Summed per turn of the event loop (metrics.DeliveryRecorder).
        now_ms = time.time() * 1000
        self.state.metrics.deliveries.record([max(0.0, (now_ms - item.id[0]) / 1000) for item in items])

    def finish(self, reason: str, sent: int) -> None:
        if self.finished:
            return
        self.finished = True
        subscription = self.subscription
        state = self.state
        try:
            try:
                state.core.leave(subscription)
            finally:
                state.admission.release(self.lease_user, self.lease)
        finally:
            # Counted and logged once, even if detaching failed.
            state.metrics.streams_open.dec()
            state.metrics.stream_disconnects.labels(reason).inc()
            access_log.info("stream", extra={
                "request_id": self.request_id, "method": "GET", "path": "/v1/events", "status": 200,
                "user_id": subscription.user_id, "reason": reason, "events_sent": sent,
                "duration_ms": round((time.monotonic() - self.started) * 1000, 1),
            })


def _opening_bytes(state: NotifierState, opening: Opening, reframe: Reframe | None) -> bytes:
    """What the stream sends after its first comment: the replayed events, or a reset."""
    if opening.reset_reason:
        return _reset_frame(state, opening.reset_reason, opening.resume_from)
    if not opening.resumed:
        return b""
    state.metrics.replays.inc()
    if not opening.events:
        return b""
    state.metrics.replayed_events.inc(len(opening.events))
    if reframe is not None:
        return b"".join(reframe(delivery) for delivery in opening.events)
    return b"".join(delivery.frame for delivery in opening.events)


def _plan(state: NotifierState, wanted: StreamRequest, subscription: Subscription, opening: bytes) -> StreamPlan:
    config = state.config
    now = time.monotonic()
    max_age = config.max_stream_seconds * (1 - random.uniform(0, DEADLINE_JITTER))
    deadline, reason = now + max_age, CloseReason.DEADLINE
    if wanted.expires_at is not None:
        token_left = wanted.expires_at - time.time()
        if token_left < max_age:
            deadline, reason = now + max(0.0, token_left), CloseReason.TOKEN_EXPIRED
    environ: dict[str, Any] = request.environ
    return StreamPlan(
        subscription=subscription,
        heartbeat=config.heartbeat_seconds,
        deadline=deadline,
        deadline_reason=reason,
        retry_ms=config.retry_ms,
        opening=opening,
        raw_socket=client_socket(environ),
        reframe=wanted.reframe,
    )


MAX_PAGE_LIMIT = 100  # notifications per page; next_before fetches the next one


def _page_limit() -> int:
    text = request.args.get("limit", "50")
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_PAGE_LIMIT:
        raise BadRequest(f"limit must be a whole number between 1 and {MAX_PAGE_LIMIT}", field="limit")
    return int(text)


def _page_cursor() -> EventId | None:
    """``before``: an event id (as in ``next_before``) above the first one there can be."""
    text = request.args.get("before")
    if text is None:
        return None
    before = parse_event_id(text)
    if before is None or before <= ZERO_ID:
        raise BadRequest("before must be an event id like 1700000000000-0 (as given in next_before)", field="before")
    return before


def _decoded(state: NotifierState, payloads: list[str]) -> list[Any]:
    """The page's events as JSON values; one that does not parse back (a
    stored entry nested past the parser's limit, or not ours) is skipped
    and counted, never a failed page."""
    found = []
    for payload in payloads:
        try:
            found.append(json.loads(payload))
        except (ValueError, RecursionError):
            state.undecodable()
    return found


@bp.get("/v1/notifications")
def recent_notifications() -> Response:
    """The user's recent notifications (their channel and broadcast), newest
    first, plus ``resume_from``: the Last-Event-ID to open the stream with so
    that nothing between this page and the stream is missed, and
    ``next_before``: the cursor of the next (older) page, null on the last.
    A page holds at most ``limit`` notifications and about
    ``NOTIFIER_PAGE_MAX_BYTES`` (at least one notification)."""
    state = current_state()
    subscriber = authenticate(state, "notifications")
    limit = _page_limit()
    before = _page_cursor()
    channels = state.names.for_subscriber(subscriber.user_id, [])
    # Read the position first: everything up to it is in this page (or older
    # pages), everything after it will come on the stream.
    history = state.core.history
    resume_from = history.last_id(channels)
    upper = before if before is not None else (resume_from[0], resume_from[1] + 1)
    page = history.recent(channels, upper, limit, state.config.page_max_bytes)
    from .inbox import READ_EVENT, read_state, unread_count

    read = read_state(state, subscriber.user_id)
    body = {
        # Read-marker events move the inbox; they are not notifications to list.
        "notifications": _decoded(state, [item.payload for item in page if item.type != READ_EVENT]),
        "resume_from": format_event_id(resume_from),
        "next_before": format_event_id(page[-1].id) if page and page.more else None,
        "read_up_to": format_event_id(read.up_to),
        "unread_count": unread_count(state, subscriber.user_id, read),
    }
    response = Response(json.dumps(body, ensure_ascii=False), status=200, mimetype="application/json")
    response.headers["Cache-Control"] = "no-store"
    return response
