"""The error hierarchy, and the one place where errors become HTTP responses.

Every error a client can cause is a ``NotifierError`` with a status, a stable
machine-readable ``code`` and, where one field is at fault, its name. The
response is always JSON; stack traces go to the log, never to the client.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from flask import Flask, Response

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


class BrokerUnavailable(NotifierError):
    """Redis is unreachable: nothing was stored, so nothing may be claimed as accepted."""

    status = 503
    code = "broker_unavailable"

    def __init__(self, message: str = "the message broker is unavailable; retry later", **kwargs: Any):
        kwargs.setdefault("headers", {"Retry-After": "1"})
        super().__init__(message, **kwargs)


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


def _flask_response(parts: tuple[int, list[tuple[str, str]], bytes]) -> Response:
    from flask import Response

    status, headers, body = parts
    return Response(body, status, headers)


def error_response(error: NotifierError) -> Response:
    """The JSON response for one of our errors (standalone or mounted)."""
    return _flask_response(notifier_error_parts(error))


def register_error_handlers(app: Flask) -> None:
    """Map NotifierError and every HTTP / unexpected error to a JSON body."""
    from werkzeug.exceptions import HTTPException

    app.register_error_handler(NotifierError, error_response)

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException) -> Response:
        code = (error.name or "error").lower().replace(" ", "_")
        status = error.code or 500
        # Keep headers such as Allow (405) but not the HTML content type.
        headers = {name: value for name, value in error.get_headers() if name.lower() != "content-type"}
        return _flask_response(error_parts(status, {"error": {"code": code, "message": error.description or error.name}}, headers))

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> Response:
        log.exception("unhandled error")
        return _flask_response(error_parts(500, INTERNAL_ERROR_BODY))
