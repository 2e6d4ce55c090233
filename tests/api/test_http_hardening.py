"""Small hardening of every response: nosniff everywhere (both publish doors
and streams), publish errors in our words, and the dev page's forms
accepted from the dev page only."""

from __future__ import annotations

import pytest

from notifier import create_app

from ..support import tokens
from ..support.config import make_config
from ..support.http import assert_json_error, open_stream, publish


def test_every_response_says_nosniff(client) -> None:
    responses = [client.get(path) for path in ("/livez", "/readyz", "/metrics", "/nope", "/v1/notifications")]
    responses.append(client.get("/v1/notifications", headers=tokens.bearer(tokens.token())))
    token = tokens.publisher()
    responses.append(publish(client, {"user_id": "a", "message": "m"}, token))  # Flask: fills the cache
    responses.append(publish(client, {"user_id": "a", "message": "m"}, token))  # the lean door
    responses.append(publish(client, {"user_id": "a"}, token))  # the lean door's error
    responses.append(client.delete("/v1/publish"))
    for response in responses:
        assert response.headers.get("X-Content-Type-Options") == "nosniff", (response.request.path, response.status)
    stream, _ = open_stream(client, tokens.bearer(tokens.token()))
    assert stream.headers["X-Content-Type-Options"] == "nosniff"
    stream.close()


def test_both_publish_doors_send_the_same_headers(client) -> None:
    token = tokens.publisher()
    flask = publish(client, {"user_id": "a", "message": "m"}, token)
    lean = publish(client, {"user_id": "a", "message": "m"}, token)
    ignore = {"X-Request-ID", "Content-Length"}
    assert {k: v for k, v in flask.headers if k not in ignore} == {k: v for k, v in lean.headers if k not in ignore}


def test_a_missing_message_is_required_not_a_wrong_type(client) -> None:
    error = assert_json_error(publish(client, {"user_id": "a"}), 422, "invalid_event")
    assert error == {"code": "invalid_event", "message": "message is required", "field": "message"}
    error = assert_json_error(publish(client, [{"user_id": "a", "message": "m"}, {"user_id": "b"}]), 422)
    assert error["message"] == "[1]: message is required"
    assert assert_json_error(publish(client, {"user_id": "a", "message": 3}), 422)["message"] == "message must be a string"


def test_a_huge_number_is_refused_in_our_words(client) -> None:
    raw = b'{"user_id": "a", "message": "m", "data": {"n": ' + b"1" * 5000 + b"}}"
    response = client.post("/v1/publish", data=raw, content_type="application/json",
                           headers=tokens.bearer(tokens.publisher()))
    message = assert_json_error(response, 400, "bad_request")["message"]
    assert message == "body is not valid JSON here: a number has more than 4300 digits"
    assert "sys." not in message


@pytest.mark.parametrize("raw, message", [
    (b'{"user_id": "a",}', "body is not valid JSON: expecting property name enclosed in double quotes at line 1 column 17"),
    (b"\xff\xfe{", "body is not valid JSON: it is not UTF-8 text"),
    (b'{"user_id": "a", "message": NaN}', "body is not valid JSON: NaN is not valid JSON"),
])
def test_bad_json_says_what_and_where(client, raw, message) -> None:
    response = client.post("/v1/publish", data=raw, content_type="application/json",
                           headers=tokens.bearer(tokens.publisher()))
    assert assert_json_error(response, 400)["message"] == message


@pytest.fixture
def dev_app():
    application = create_app(make_config(dev_page=True))
    yield application
    application.extensions["notifier"].stop()


OWN = "http://localhost"


@pytest.mark.parametrize("path, form", [("/dev/login", {"user": "alice"}), ("/dev/send", {"user": "alice"}),
                                        ("/dev/logout", {})])
@pytest.mark.parametrize("headers", [
    {"Origin": "https://evil.example"},
    {"Origin": "null"},
    {"Referer": "https://evil.example/page"},
    {},
    {"Origin": "http://rebound.example", "Host": "rebound.example"},  # DNS rebinding to 127.0.0.1
], ids=["other-site", "null-origin", "other-referer", "no-origin", "rebinding"])
def test_dev_forms_from_anywhere_else_are_refused(dev_app, path, form, headers) -> None:
    client = dev_app.test_client()
    response = client.post(path, data=form, headers=headers)
    error = assert_json_error(response, 403, "forbidden")
    assert error["field"] == "origin"
    assert "Set-Cookie" not in response.headers
    assert dev_app.extensions["notifier"].core.history.last_id() == (0, 0), "nothing was published"


@pytest.mark.parametrize("headers", [{"Origin": OWN}, {"Referer": OWN + "/"}])
def test_dev_forms_from_the_dev_page_work(dev_app, headers) -> None:
    client = dev_app.test_client()
    response = client.post("/dev/login", data={"user": "alice"}, headers=headers)
    assert response.status_code == 302 and "notifier_access=" in response.headers["Set-Cookie"]
    assert client.post("/dev/send", data={"user": "alice"}, headers=headers).status_code == 302
    assert dev_app.extensions["notifier"].core.history.last_id() != (0, 0)
    assert client.post("/dev/logout", headers=headers).status_code == 302
