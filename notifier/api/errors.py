"""Errors as Flask responses: the parts come from ``notifier.errors``, the
one mapping; this only hands them to Flask."""

from __future__ import annotations

import logging

from flask import Flask, Response
from werkzeug.exceptions import HTTPException

from ..errors import INTERNAL_ERROR_BODY, NotifierError, error_parts, notifier_error_parts

log = logging.getLogger("notifier.errors")


def _flask_response(parts: tuple[int, list[tuple[str, str]], bytes]) -> Response:
    status, headers, body = parts
    return Response(body, status, headers)


def error_response(error: NotifierError) -> Response:
    """The JSON response for one of our errors (standalone or mounted)."""
    return _flask_response(notifier_error_parts(error))


def register_error_handlers(app: Flask) -> None:
    """Map NotifierError and every HTTP / unexpected error to a JSON body."""
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
