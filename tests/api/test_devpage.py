"""The dev page's endpoints as its fetch() calls them (``Accept:
application/json``): JSON answers, any event type, optional JSON data, and a
clear JSON error that publishes nothing. The page itself in Chromium is
tests/e2e/test_browser.py; the same-origin check is test_http_hardening.py."""

from __future__ import annotations

import json

import pytest

from notifier import create_app

from ..support.config import make_config
from ..support.http import assert_json_error

OWN = {"Origin": "http://localhost", "Accept": "application/json"}


@pytest.fixture
def dev_app():
    application = create_app(make_config(dev_page=True))
    yield application
    application.extensions["notifier"].stop()


def test_the_page_s_fetch_gets_json_and_a_typed_event_is_published(dev_app) -> None:
    client = dev_app.test_client()
    login = client.post("/dev/login", data={"user": "alice"}, headers=OWN)
    assert login.status_code == 200 and login.get_json() == {"user": "alice"}
    assert "notifier_access=" in login.headers["Set-Cookie"]
    sent = client.post("/dev/send", data={"user": "alice", "type": "order.shipped", "message": "Shipped",
                                          "data": '{"order": 42}'}, headers=OWN)
    assert sent.status_code == 202
    body = sent.get_json()
    assert body == {"id": body["id"], "user_id": "alice", "type": "order.shipped", "message": "Shipped",
                    "data": {"order": 42}}
    state = dev_app.extensions["notifier"]
    [stored] = state.core.history.recent(state.names.for_subscriber("alice", []), None, 10)
    assert json.loads(stored.payload)["id"] == body["id"] and stored.type == "order.shipped"
    logout = client.post("/dev/logout", headers=OWN)
    assert logout.status_code == 200 and logout.get_json() == {"user": None}


def test_without_a_type_it_is_a_notification_and_a_plain_form_still_gets_redirected(dev_app) -> None:
    client = dev_app.test_client()
    response = client.post("/dev/send", data={"user": "alice", "type": ""}, headers={"Origin": "http://localhost"})
    assert response.status_code == 302 and response.headers["Location"] == "/"
    state = dev_app.extensions["notifier"]
    [stored] = state.core.history.recent(state.names.for_subscriber("alice", []), None, 10)
    assert stored.type == "notification"


@pytest.mark.parametrize("form, status, field", [
    ({"user": "alice", "type": "bad type"}, 422, "type"),
    ({"user": "alice", "type": "x\nevent: forged"}, 422, "type"),
    ({"user": ""}, 422, "user_id"),
    ({"user": "alice", "data": "{not json"}, 400, "data"),
    ({"user": "alice", "data": "[1, 2]"}, 400, "data"),
    ({"user": "alice", "message": "x" * 70_000}, 413, "message"),
])
def test_a_bad_send_is_a_json_error_and_publishes_nothing(dev_app, form, status, field) -> None:
    response = dev_app.test_client().post("/dev/send", data=form, headers=OWN)
    assert assert_json_error(response, status)["field"] == field
    assert dev_app.extensions["notifier"].core.history.last_id() == (0, 0)
