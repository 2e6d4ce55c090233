"""Development only: a page at ``/`` that logs in with a cookie, streams
with the browser helper (``/v1/client.js``, so the page is also that helper's
example) and shows every event as it comes, whatever its type, next to what
it sent. Registered only when ``NOTIFIER_ENV=development`` (which listens on
loopback only, ``config/``); production has no login of its own (the host
web app sets the access cookie).

The page posts with ``fetch()`` and asks for JSON (``Accept:
application/json``), so it never reloads and keeps what it sent; a plain form
post (no JavaScript) still gets a redirect back to the page.

Its endpoints log anyone in as anyone and publish without credentials, so
they are accepted only from the page itself: the browser's ``Origin`` (or,
where it sends none, ``Referer``) must be this server's own loopback origin.
Another site's page (cross-site request forgery) and a DNS-rebinding name
pointing at 127.0.0.1 both fail that check."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Response, jsonify, make_response, redirect, render_template, request
from flask_jwt_extended import set_access_cookies, unset_jwt_cookies

from ..auth import TokenRequest, mint_token
from ..config.network import is_loopback_host
from ..errors import BadRequest, Forbidden, NotifierError
from ..events import utc_timestamp
from ..state import current_state
from ..validation import validate_notification, validate_user_id

bp = Blueprint("notifier_dev", __name__, template_folder="../templates")


@bp.before_request
def _same_origin_only() -> None:
    if request.method != "POST":
        return
    own = request.host_url.rstrip("/")
    sent = request.headers.get("Origin") or _origin_of(request.headers.get("Referer", ""))
    if sent != own or not _loopback_host(request.host):
        raise Forbidden("the dev page's forms are accepted from the dev page itself only (Origin check)",
                        field="origin")


def _origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else ""


def _loopback_host(host: str) -> bool:
    return is_loopback_host(urlsplit(f"//{host}").hostname or "")


def _answer(body: dict[str, Any], status: int = 200) -> Response:
    """JSON for the page's fetch(); a redirect back to the page for a plain form."""
    if request.accept_mimetypes.best == "application/json":
        return make_response(jsonify(body), status)
    return make_response(redirect("/"))


@bp.get("/")
def index() -> str:
    return render_template("dev.html")


@bp.post("/dev/login")
def login() -> Response:
    state = current_state()
    user = (request.form.get("user") or "").strip()
    try:
        validate_user_id(user, "user")
    except NotifierError:
        raise BadRequest("user must be a non-empty name without control characters", field="user") from None
    token = mint_token(state.config, TokenRequest(user, topics=["demo:*"], expires=timedelta(hours=8)))
    response = _answer({"user": user})
    set_access_cookies(response, token, max_age=8 * 3600)
    return response


@bp.post("/dev/logout")
def logout() -> Response:
    response = _answer({"user": None})
    unset_jwt_cookies(response)
    return response


def _form_data() -> dict[str, Any] | None:
    """The optional ``data`` field: a JSON object, as the publish API takes."""
    text = (request.form.get("data") or "").strip()
    if not text:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        raise BadRequest("data must be a JSON object, like {\"order\": 42}", field="data") from None
    if not isinstance(data, dict):
        raise BadRequest("data must be a JSON object, like {\"order\": 42}", field="data")
    return data


@bp.post("/dev/send")
def send() -> Response:
    """Publish a test event to a user, as a publisher would: any type, a
    message and optional JSON data, validated like ``POST /v1/publish``."""
    state = current_state()
    item: dict[str, Any] = {"user_id": (request.form.get("user") or "").strip(),
                            "type": (request.form.get("type") or "").strip() or "notification",
                            "message": request.form.get("message") or "Hello!"}
    data = _form_data()
    if data is not None:
        item["data"] = data
    notifications = validate_notification(item, state.limits, utc_timestamp())
    [published] = state.core.publish(notifications)
    return _answer({"id": published.id, **item}, 202)
