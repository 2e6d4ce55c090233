"""The error hierarchy, and what each error looks like as an HTTP response
(status, headers, JSON body); ``api/errors.py`` hands these to Flask.

Every error a client can cause is a ``NotifierError`` with a status, a stable
machine-readable ``code`` and, where one field is at fault, its name. The
response is always JSON; stack traces go to the log, never to the client.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

log = logging.getLogger("notifier.errors")


class NotifierError(Exception):
    status = 500
    code = "internal_error"

    def __init__(self, message: str, *, field: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field:
            error["field"] = self.field
        return {"error": error}


class InvalidEvent(NotifierError):
    """A publish body that parsed but breaks a rule (422), or did not parse (400)."""

    status = 422
    code = "invalid_event"

    @classmethod
    def bad_request(cls, message: str) -> InvalidEvent:
        error = cls(message, field="body")
        error.status = 400
        error.code = "bad_request"
        return error


class BadRequest(NotifierError):
    status = 400
    code = "bad_request"


class Unauthorized(NotifierError):
    status = 401
    code = "unauthorized"


class Forbidden(NotifierError):
    status = 403
    code = "forbidden"


class PayloadTooLarge(NotifierError):
    status = 413
    code = "payload_too_large"


class UnsupportedMedia(NotifierError):
    status = 415
    code = "unsupported_media_type"


class RateLimited(NotifierError):
    """Too many requests from one credential: wait ``Retry-After`` seconds."""

    status = 429
    code = "rate_limited"

    def __init__(self, message: str, retry_after_seconds: float):
        super().__init__(message, headers={"Retry-After": str(max(1, math.ceil(retry_after_seconds)))})


class BrokerUnavailable(NotifierError):
    """Redis is unreachable: nothing was stored, so nothing may be claimed as accepted."""

    status = 503
    code = "broker_unavailable"

    def __init__(self, message: str = "the message broker is unavailable; retry later", **kwargs: Any):
        kwargs.setdefault("headers", {"Retry-After": "1"})
        super().__init__(message, **kwargs)


class TooManyStreams(NotifierError):
    """The user already has NOTIFIER_MAX_STREAMS_PER_USER streams open (across all pods)."""

    status = 429
    code = "too_many_streams"

    def __init__(self, limit: int, retry_after_seconds: int):
        super().__init__(f"you already have {limit} streams open; close one (or wait) and retry",
                         headers={"Retry-After": str(retry_after_seconds)})


class WorkerFull(NotifierError):
    """This worker holds NOTIFIER_MAX_STREAMS_PER_WORKER streams: go to another one."""

    status = 503
    code = "worker_full"

    def __init__(self, retry_after_seconds: int):
        super().__init__("this server holds as many streams as it may; retry (another instance may have room)",
                         headers={"Retry-After": str(retry_after_seconds)})


class Draining(NotifierError):
    """This worker is shutting down: go to another one."""

    status = 503
    code = "draining"

    def __init__(self, retry_after_seconds: int = 1):
        super().__init__(
            "this server is shutting down; reconnect to another instance",
            headers={"Retry-After": str(retry_after_seconds)},
        )


# Compact, ASCII-only JSON plus a newline: what Flask's jsonify writes, so a
# body is the same bytes whether Flask or the lean publish path sent it.
_JSON = json.JSONEncoder(separators=(",", ":"))
JSON_CONTENT_TYPE = "application/json"
# On every response: a browser must never guess a type (a JSON error echoing
# input rendered as HTML would be a script injection).
NOSNIFF = ("X-Content-Type-Options", "nosniff")


def json_bytes(body: Any) -> bytes:
    return (_JSON.encode(body) + "\n").encode("ascii")


def error_parts(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> tuple[int, list[tuple[str, str]], bytes]:
    """Status, headers and body of an error response: never cached, always JSON."""
    merged = {"Content-Type": JSON_CONTENT_TYPE, "Cache-Control": "no-store"}
    merged.update(headers or {})
    return status, list(merged.items()), json_bytes(body)


def notifier_error_parts(error: NotifierError) -> tuple[int, list[tuple[str, str]], bytes]:
    return error_parts(error.status, error.body(), error.headers)


INTERNAL_ERROR_BODY = {"error": {"code": "internal_error", "message": "internal server error"}}
