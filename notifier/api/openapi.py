"""The OpenAPI 3.1 document of every endpoint, served at ``/openapi.json``.

Built here, in one place, from the same limits the code enforces; the
property-based run of schemathesis (tests/e2e/test_openapi_schemathesis.py)
holds the real service to it: no 5xx, every status, content type and body as
documented. The development page (``/``, ``/dev/*``) exists only in
development mode and is not part of the API.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

from ..state import current_state
from ..validation import Limits

bp = Blueprint("notifier_openapi", __name__)

ERROR = {"$ref": "#/components/schemas/Error"}
TOPIC = {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9:._/@\-]{0,199}$"}
SSE_EVENT = {"type": "object", "properties": {"id": {"type": "string"}, "event": {"type": "string"},
                                             "data": {"type": "string"}, "retry": {"type": "integer"}}}
EVENT_ID = {"type": "string", "pattern": r"^[0-9]+-[0-9]+$", "examples": ["1700000000000-0"]}


def _json(schema: dict[str, Any], description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        response["headers"] = headers
    return response


def _errors(*statuses: int) -> dict[str, Any]:
    meaning = {
        400: "bad request (the field is named)", 401: "no valid credential", 403: "not allowed for this credential",
        413: "too large", 415: "not JSON", 422: "breaks a rule (the field is named)",
        429: "over a rate limit: wait Retry-After seconds", 503: "shutting down or Redis unavailable: retry",
    }
    retry = {"Retry-After": {"schema": {"type": "string"}, "description": "seconds to wait"}}
    return {str(s): _json(ERROR, meaning[s], retry if s in (429, 503) else None) for s in statuses}


def _notification_in(limits: Limits) -> dict[str, Any]:
    user_id = {"type": "string", "minLength": 1, "maxLength": 256}
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["message"],
        "properties": {
            "user_id": user_id,
            "user_ids": {"type": "array", "items": user_id, "minItems": 1, "maxItems": limits.max_recipients},
            "topic": TOPIC,
            "broadcast": {"const": True},
            "type": {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9:._/\-]{0,63}$"},
            "message": {"type": "string", "description": f"at most {limits.max_payload_bytes} bytes (UTF-8)"},
            "data": {"type": ["object", "null"]},
        },
        "description": "exactly one of user_id, user_ids, topic or broadcast",
    }


def _events_operation() -> dict[str, Any]:
    return {
        "summary": "Subscribe: the user's channel, broadcast and granted topics, as Server-Sent Events",
        "security": [{"bearer": []}, {"cookie": []}, {}],
        "parameters": [
            {"name": "topic", "in": "query", "schema": {"type": "array", "items": TOPIC}, "style": "form",
             "explode": True, "description": "repeatable; each must be granted by the token's topics claim"},
            {"name": "ticket", "in": "query", "schema": {"type": "string"},
             "description": "a stream ticket from POST /v1/stream-tickets, instead of the token"},
            {"name": "last_event_id", "in": "query", "schema": EVENT_ID},
            {"name": "Last-Event-ID", "in": "header", "schema": EVENT_ID},
        ],
        "responses": {
            "200": {"description": "the stream (ends at token expiry, shutdown or eviction); each event's data is "
                                   "one Notification as JSON, or a reset ({reason, resume_from})",
                    "content": {"text/event-stream": {"schema": SSE_EVENT}}},
            **_errors(400, 401, 403, 429, 503),
        },
    }


def _recent_operation() -> dict[str, Any]:
    page = {
        "type": "object", "required": ["notifications", "resume_from", "next_before"],
        "properties": {"notifications": {"type": "array", "items": {"$ref": "#/components/schemas/Notification"}},
                       "resume_from": EVENT_ID, "next_before": {"anyOf": [EVENT_ID, {"type": "null"}]}},
    }
    return {
        "summary": "The user's recent notifications, newest first, and where to resume the stream from",
        "security": [{"bearer": []}, {"cookie": []}],
        "parameters": [{"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
                       {"name": "before", "in": "query", "schema": EVENT_ID}],
        "responses": {"200": _json(page, "a page"), **_errors(400, 401, 403, 503)},
    }


def _publish_operation(limits: Limits) -> dict[str, Any]:
    body = {"oneOf": [{"$ref": "#/components/schemas/NotificationIn"},
                      {"type": "array", "items": {"$ref": "#/components/schemas/NotificationIn"},
                       "minItems": 1, "maxItems": limits.max_batch}]}
    published = {"type": "object", "required": ["published"], "properties": {"published": {"type": "array", "items": {
        "type": "object", "required": ["id", "receivers"],
        "properties": {"id": EVENT_ID, "receivers": {"type": "integer", "minimum": 0}}}}}}
    return {
        "summary": "Publish (internal services, publisher credentials); a batch is all or nothing",
        "security": [{"bearer": []}],
        "requestBody": {"required": True, "content": {"application/json": {"schema": body}},
                        "description": f"at most {limits.max_body_bytes} bytes"},
        "responses": {"202": _json(published, "stored and sent"),
                      **_errors(400, 401, 403, 413, 415, 422, 429, 503)},
    }


def _ticket_operation() -> dict[str, Any]:
    ticket = {"type": "object", "required": ["ticket", "expires_in", "topics"],
              "properties": {"ticket": {"type": "string"}, "expires_in": {"type": "number"},
                             "topics": {"type": "array", "items": TOPIC}}}
    return {
        "summary": "A single-use ticket (about 30 s) to open one stream: GET /v1/events?ticket=...",
        "security": [{"bearer": []}],
        "requestBody": {"required": False, "content": {"application/json": {"schema": {
            "type": "object", "additionalProperties": False,
            "properties": {"topics": {"type": "array", "items": TOPIC}}}}}},
        "responses": {"201": _json(ticket, "the ticket"), **_errors(400, 401, 403, 503)},
    }


def _health_operation(summary: str, unavailable: bool) -> dict[str, Any]:
    status = {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}}
    responses = {"200": _json(status, "ok")}
    if unavailable:
        responses["503"] = _json(status, "not ready (Redis unreachable, or draining)")
    return {"summary": summary, "responses": responses}


def document(limits: Limits) -> dict[str, Any]:
    notification = {"type": "object", "required": ["id", "type", "message", "data", "timestamp"],
                    "properties": {"id": EVENT_ID, "user_id": {"type": "string"}, "topic": {"type": "string"},
                                   "broadcast": {"type": "boolean"}, "type": {"type": "string"},
                                   "message": {"type": "string"}, "data": {"type": "object"},
                                   "timestamp": {"type": "string"}}}
    error = {"type": "object", "required": ["error"], "additionalProperties": False, "properties": {"error": {
        "type": "object", "required": ["code", "message"],
        "properties": {"code": {"type": "string"}, "message": {"type": "string"}, "field": {"type": "string"}}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "notifier", "version": "1",  # the API's version (/v1), not the package's
                 "description": "Real-time notifications over Server-Sent Events. Security: docs/security.md."},
        "paths": {
            "/v1/events": {"get": _events_operation()},
            "/v1/notifications": {"get": _recent_operation()},
            "/v1/publish": {"post": _publish_operation(limits)},
            "/v1/stream-tickets": {"post": _ticket_operation()},
            "/livez": {"get": _health_operation("This worker answers", False)},
            "/readyz": {"get": _health_operation("This worker can deliver", True)},
            "/metrics": {"get": {"summary": "Prometheus exposition", "responses": {"200": {
                "description": "metrics", "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
            "/openapi.json": {"get": {"summary": "This document", "responses": {"200": _json({"type": "object"}, "it")}}},
        },
        "components": {
            "schemas": {"Error": error, "Notification": notification, "NotificationIn": _notification_in(limits)},
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "cookie": {"type": "apiKey", "in": "cookie", "name": "notifier_access"},
            },
        },
    }


@bp.get("/openapi.json")
def openapi() -> Response:
    return jsonify(document(current_state().limits))
