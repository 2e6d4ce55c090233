"""The inbox: POST /v1/notifications/read, the unread count in
GET /v1/notifications, and ``event: read`` on the user's other streams; every
bad input a clear 4xx JSON error that changes nothing."""

from __future__ import annotations

import json

import pytest

from ..support import tokens
from ..support.http import assert_json_error, events_in, open_stream, publish

ALICE = tokens.bearer(tokens.token("alice"))


def read(client, body, headers=None, **kwargs):
    return client.post("/v1/notifications/read", data=body if isinstance(body, (str, bytes)) else json.dumps(body),
                       headers={**ALICE, **(headers or {})}, content_type=kwargs.pop("content_type", "application/json"),
                       **kwargs)


def inbox(client) -> dict:
    response = client.get("/v1/notifications", headers=ALICE)
    assert response.status_code == 200
    return response.get_json()


def publish_three(client) -> list[str]:
    for n in range(3):
        assert publish(client, {"user_id": "alice", "message": f"n{n}"}).status_code == 202
    return [item["id"] for item in reversed(inbox(client)["notifications"])]


def test_marking_read_moves_the_count_and_tells_the_other_tabs(client) -> None:
    ids = publish_three(client)
    assert inbox(client)["unread_count"] == 3 and inbox(client)["read_up_to"] == "0-0"
    other_tab, chunks = open_stream(client, ALICE)
    next(chunks)
    response = read(client, {"up_to": ids[1]})
    assert response.status_code == 200
    assert response.get_json() == {"up_to": ids[1], "unread_count": 1}
    [event] = events_in(next(chunks))
    assert event.event == "read" and event.json()["data"] == {"up_to": ids[1]}
    listed = inbox(client)
    assert listed["unread_count"] == 1 and listed["read_up_to"] == ids[1]
    assert [n["message"] for n in listed["notifications"]] == ["n2", "n1", "n0"], "read events are not listed"
    assert read(client, {"ids": [ids[2]]}).get_json()["unread_count"] == 0
    assert read(client, {"up_to": ids[0]}).get_json()["up_to"] == ids[1], "the marker never moves back"
    other_tab.close()


def test_read_state_is_per_user(client) -> None:
    ids = publish_three(client)
    read(client, {"up_to": ids[2]})
    publish(client, {"user_id": "bob", "message": "for bob"})
    bob = client.get("/v1/notifications", headers=tokens.bearer(tokens.token("bob"))).get_json()
    assert bob["unread_count"] == 1 and bob["read_up_to"] == "0-0"


@pytest.mark.parametrize("body, content_type, status, field", [
    ("up_to=1-0", "application/x-www-form-urlencoded", 415, None),
    ("{not json", "application/json", 400, "body"),
    ({}, "application/json", 422, "body"),
    ({"up_to": "1-0", "ids": ["1-0"]}, "application/json", 422, "body"),
    ({"until": "1-0"}, "application/json", 422, "body"),
    ({"up_to": "yesterday"}, "application/json", 422, "up_to"),
    ({"up_to": 17}, "application/json", 422, "up_to"),
    ({"up_to": "99999999999999-0"}, "application/json", 422, "up_to"),
    ({"ids": []}, "application/json", 422, "ids"),
    ({"ids": "1-0"}, "application/json", 422, "ids"),
    ({"ids": ["1-0"] * 101}, "application/json", 422, "ids"),
    ({"ids": ["1-0", "x"]}, "application/json", 422, "ids"),
    ([1], "application/json", 422, "body"),
])
def test_bad_requests_are_refused_and_change_nothing(client, app, body, content_type, status, field) -> None:
    publish_three(client)
    last = app.extensions["notifier"].core.history.last_id()
    error = assert_json_error(read(client, body, content_type=content_type), status)
    if field:
        assert error["field"] == field
    assert inbox(client)["unread_count"] == 3
    assert app.extensions["notifier"].core.history.last_id() == last, "no read event was published"


def test_credentials_and_origin_are_checked(client) -> None:
    ids = publish_three(client)
    assert_json_error(client.post("/v1/notifications/read", json={"up_to": ids[0]}), 401)
    assert_json_error(read(client, {"up_to": ids[0]}, headers=tokens.bearer(tokens.publisher())), 403)
    assert_json_error(read(client, {"up_to": ids[0]}, headers={"Origin": "https://evil.example"}), 403)
    assert read(client, {"up_to": ids[0]}, headers={"Origin": "http://localhost"}).status_code == 200
    # notifier's own cookie: flask-jwt-extended's double-submit CSRF check applies to this POST.
    client.set_cookie("notifier_access", tokens.token("alice"), domain="localhost")
    response = client.post("/v1/notifications/read", json={"up_to": ids[1]})
    assert_json_error(response, 401)
    assert inbox(client)["read_up_to"] == ids[0]
