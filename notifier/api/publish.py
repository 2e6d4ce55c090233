"""``POST /v1/publish``: internal services publish with publisher credentials.

One pipeline (``respond``: authentication, body, validation, publishing,
metrics and the mapping of every error) behind two doors:

- the Flask view, always registered (and the only door when notifier is
  mounted in a host app, whose hooks then run as for any other view);
- ``LeanPublish``, a WSGI wrapper the standalone service puts in front of
  Flask. A publishing service sends the same token with every request; once
  that token has been verified (by the Flask view, which fills the publisher
  cache) its publishes skip Flask's request machinery. Anything it is not
  sure about (no cached identity, a query string, no Content-Length) goes to
  Flask as is.

Both doors return the same bytes for the same request.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import IO, TYPE_CHECKING, Any

from flask import Blueprint, Response, request

from ..auth import PublisherIdentity, authenticate_publisher, publisher_cache
from ..envelope import reply_body
from ..errors import (
    INTERNAL_ERROR_BODY,
    JSON_CONTENT_TYPE,
    NOSNIFF,
    Forbidden,
    NotifierError,
    PayloadTooLarge,
    RateLimited,
    Unauthorized,
    error_parts,
    notifier_error_parts,
)
from ..events import utc_timestamp
from ..logs import log_request, request_id_from
from ..runtime.gevent import on_fresh_stack
from ..runtime.gunicorn import release_environ
from ..runtime.werkzeug import status_line
from ..state import current_state
from ..validation import parse_publish_body

if TYPE_CHECKING:  # pragma: no cover
    from flask import Flask

    from ..state import NotifierState

bp = Blueprint("notifier_publish", __name__)
log = logging.getLogger("notifier.publish")

PUBLISH_PATH = "/v1/publish"
EVENTS_PATH = "/v1/events"
ACCEPTED = 202

ResponseParts = tuple[int, list[tuple[str, str]], bytes]


def read_body(length: int | None, stream: IO[bytes], limit: int) -> bytes:
    """The body, refusing more than ``limit`` bytes without reading it all."""
    if length is not None and length > limit:
        raise PayloadTooLarge(f"request body is larger than {limit} bytes", field="body")
    data = stream.read(limit + 1 if length is None else length)
    if len(data) > limit:
        raise PayloadTooLarge(f"request body is larger than {limit} bytes", field="body")
    return data


def respond(state: NotifierState, authenticate: Callable[[], PublisherIdentity], length: int | None,
            stream: IO[bytes], content_type: str | None) -> ResponseParts:
    """One publish request, start to end: status, headers and body. Every
    error, ours or not, is mapped here (and only here) for both doors."""
    metrics = state.metrics
    metrics.publish_requests.inc()
    try:
        try:
            publisher = authenticate()
        except (Unauthorized, Forbidden):
            metrics.auth_failures.labels("publish").inc()
            raise
        check_rate(state, publisher)  # before the body is read: a refusal costs next to nothing
        body = read_body(length, stream, state.limits.max_body_bytes)
        return ACCEPTED, [("Content-Type", JSON_CONTENT_TYPE)], accept(state, publisher, body, content_type)
    except NotifierError as exc:
        metrics.publish_errors.labels(str(exc.status)).inc()
        return notifier_error_parts(exc)
    except Exception:
        log.exception("unhandled error")
        return error_parts(500, INTERNAL_ERROR_BODY)


def check_rate(state: NotifierState, publisher: PublisherIdentity) -> None:
    """Raise RateLimited (429 + Retry-After) when ``publisher`` is over
    NOTIFIER_PUBLISH_RATE (one bucket per publisher name, across pods)."""
    limiter = state.guards.publish_rate
    if limiter is None:
        return
    wait = limiter.acquire(publisher.name)
    if wait > 0:
        raise RateLimited(f"publisher {publisher.name!r} is over its rate of {state.config.publish_rate:g} requests "
                          "per second; retry after Retry-After seconds", wait)


def accept(state: NotifierState, publisher: PublisherIdentity, body: bytes, content_type: str | None) -> bytes:
    """Validate, authorize and publish one request body, all or nothing; the
    202 reply. Raises NotifierError (4xx for the request, 503 for Redis)."""
    notifications = parse_publish_body(body, content_type, state.limits, utc_timestamp())
    for notification in notifications:
        publisher.check(notification.target)
    published = state.core.publish(notifications)
    # One counter write per target kind, not per event (each is a locked file
    # write in multiprocess mode; a batch holds up to NOTIFIER_MAX_BATCH).
    per_kind = Counter(item.notification.target.kind for item in published)
    for kind, count in per_kind.items():
        state.metrics.events_published.labels(kind).inc(count)
    return reply_body(published)


@bp.post(PUBLISH_PATH)
def publish() -> Response:
    status, headers, body = respond(current_state(), authenticate_publisher, request.content_length, request.stream,
                                    request.content_type)
    return Response(body, status, headers)


StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class LeanPublish:
    """WSGI middleware installed by ``create_app`` (the standalone service):
    ``POST /v1/publish`` from an already-verified publisher, without Flask;
    and the opening of a ``GET /v1/events`` stream on a stack of its own
    (``on_fresh_stack``: the stream's greenlet, which lives as long as the
    stream, then keeps only the shallow stack it waits on: about 4 KiB less
    per stream, see bench/README.md), whose environ is then emptied where
    gunicorn will not read it again (``release_environ``: 2 KiB less)."""

    def __init__(self, app: Flask, state: NotifierState, wsgi_app: WSGIApp):
        self.state = state
        self.cache = publisher_cache(app)
        self.wsgi_app = wsgi_app

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO")
        if path == EVENTS_PATH:
            body = on_fresh_stack(self.wsgi_app, environ, start_response)
            # Everything the stream needs has been read from it.
            release_environ(environ)
            return body
        if path != PUBLISH_PATH or environ.get("REQUEST_METHOD") != "POST" or environ.get("QUERY_STRING"):
            return self.wsgi_app(environ, start_response)
        publisher = self.cache.get(environ.get("HTTP_AUTHORIZATION"))
        length = _content_length(environ)
        if publisher is None or length is None:
            return self.wsgi_app(environ, start_response)
        started = time.monotonic()
        request_id = request_id_from(environ.get("HTTP_X_REQUEST_ID"))
        status, headers, reply = respond(self.state, lambda: publisher, length, environ["wsgi.input"],
                                         environ.get("CONTENT_TYPE"))
        headers.append(("Content-Length", str(len(reply))))
        headers.append(("X-Request-ID", request_id))
        headers.append(NOSNIFF)  # what the Flask door adds after every request
        start_response(status_line(status), headers)
        return ReplyThenLog(reply, (request_id, "POST", PUBLISH_PATH, status, started, environ.get("REMOTE_ADDR")))


class ReplyThenLog:
    """A reply body whose access line is written once the server has sent it
    (a WSGI server calls ``close()`` after the last write): the publisher's
    answer does not wait for the log line. Its duration includes the write."""

    __slots__ = ("line", "reply")

    def __init__(self, reply: bytes, line: tuple[str, str, str, int, float, str | None]):
        self.reply = reply
        self.line = line

    def __iter__(self) -> Iterator[bytes]:
        yield self.reply

    def close(self) -> None:
        log_request(*self.line)


def _content_length(environ: dict[str, Any]) -> int | None:
    """A plain decimal Content-Length, else None (Flask handles the rest)."""
    value = environ.get("CONTENT_LENGTH")
    if not value or not (value.isascii() and value.isdigit()) or environ.get("HTTP_TRANSFER_ENCODING"):
        return None
    return int(value)
