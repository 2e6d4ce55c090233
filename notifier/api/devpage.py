"""Development only: a page at ``/`` that logs in with a cookie, opens an
EventSource and shows notifications as they come. Registered only when
``NOTIFIER_ENV=development`` (which listens on loopback only, ``config/``);
production has no login of its own (the host web app sets the access cookie).

Its forms log anyone in as anyone and publish without credentials, so they
are accepted only from the page itself: the browser's ``Origin`` (or, where
it sends none, ``Referer``) must be this server's own loopback origin. Another
site's page (cross-site request forgery) and a DNS-rebinding name pointing
at 127.0.0.1 both fail that check."""

from __future__ import annotations

import ipaddress
from datetime import timedelta
from urllib.parse import urlsplit

from flask import Blueprint, Response, make_response, redirect, render_template, request
from flask_jwt_extended import set_access_cookies, unset_jwt_cookies

from ..auth import TokenRequest, mint_token
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
    name = urlsplit(f"//{host}").hostname or ""
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


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
    response = make_response(redirect("/"))
    set_access_cookies(response, token, max_age=8 * 3600)
    return response


@bp.post("/dev/logout")
def logout() -> Response:
    response = make_response(redirect("/"))
    unset_jwt_cookies(response)
    return response


@bp.post("/dev/send")
def send() -> Response:
    """Publish a test notification to a user, as a publisher would."""
    state = current_state()
    user = (request.form.get("user") or "").strip()
    item = {"user_id": user, "type": "notification", "message": request.form.get("message") or "Hello!"}
    notifications = validate_notification(item, state.limits, utc_timestamp())
    state.core.publish(notifications)
    return make_response(redirect("/"))
