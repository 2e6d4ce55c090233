"""Development only: a page at ``/`` that logs in with a cookie, opens an
EventSource and shows notifications as they come. Registered only when
``NOTIFIER_ENV=development``; production has no login of its own (the host
web app sets the access cookie)."""

from __future__ import annotations

from datetime import timedelta

from flask import Blueprint, Response, make_response, redirect, render_template, request
from flask_jwt_extended import set_access_cookies, unset_jwt_cookies

from ..auth import TokenRequest, mint_token
from ..errors import BadRequest, NotifierError
from ..events import utc_timestamp
from ..state import current_state
from ..validation import validate_notification, validate_user_id

bp = Blueprint("notifier_dev", __name__, template_folder="../templates")


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
