"""POST /v1/publish: credentials, validation, all-or-nothing batches, scopes.

Every bad input gets a clear 4xx JSON error naming the field, and a stream
that was listening the whole time shows that nothing was published."""

from __future__ import annotations

import json

import pytest

from ..support import tokens
from ..support.http import assert_json_error, assert_nothing_published, open_stream
from ..support.sse import SSEParser


@pytest.fixture
def watcher(client):
    """alice's stream with orders:* granted, open for the whole test."""
    response, chunks = open_stream(client, tokens.bearer(tokens.token("alice", topics=["orders:*"])),
                                   "?topic=orders:1")
    next(chunks)
    yield chunks
    response.close()




def post(client, body=None, token=None, content_type="application/json", raw=None):
    headers = tokens.bearer(token) if token else {}
    data = raw if raw is not None else json.dumps(body)
    return client.post("/v1/publish", data=data, headers={**headers, "Content-Type": content_type} if content_type else headers)


def test_publish_returns_202_with_ids_and_receivers(client, watcher) -> None:
    response = post(client, {"user_id": "alice", "type": "order.shipped", "message": "Shipped", "data": {"n": 1}},
                    tokens.publisher())
    assert response.status_code == 202
    body = response.get_json()
    [item] = body["published"]
    assert body["count"] == 1 and item["user_id"] == "alice" and item["receivers"] == 1 and item["type"] == "order.shipped"
    [event] = SSEParser().feed(next(watcher).decode())
    assert event.id == item["id"]


def test_batch_and_user_ids_expand_to_one_event_per_user(client, watcher) -> None:
    batch = [{"user_ids": ["alice", "bob"], "message": "hi"}, {"topic": "orders:1", "message": "t"},
             {"broadcast": True, "message": "b"}]
    body = post(client, batch, tokens.publisher()).get_json()
    targets = [next(k for k in p if k in ("user_id", "topic", "broadcast")) for p in body["published"]]
    assert targets == ["user_id", "user_id", "topic", "broadcast"]
    ids = [p["id"] for p in body["published"]]
    assert len(set(ids)) == 4 and ids == sorted(ids)
    got = SSEParser().feed(next(watcher).decode())
    assert [e.json()["message"] for e in got] == ["hi", "t", "b"], "alice gets hers, the topic and the broadcast"


@pytest.mark.parametrize("token, status", [
    (None, 401),
    (tokens.token("alice"), 403),  # a user's token is not a publisher credential
    (tokens.publisher(secret="wrong-secret-" + "z" * 60), 401),
    (tokens.publisher(ttl=-10), 401),
    (tokens.unsigned("billing"), 401),
    (tokens.token("billing", role="publisher", token_type="refresh"), 401),
])
def test_publish_credentials(client, app, watcher, token, status) -> None:
    response = post(client, {"broadcast": True, "message": "x"}, token)
    assert_json_error(response, status)
    assert_nothing_published(client, app, watcher)


def test_publisher_cookie_is_not_a_credential(client, app, watcher) -> None:
    client.set_cookie("notifier_access", tokens.publisher(), domain="localhost")
    assert_json_error(post(client, {"broadcast": True, "message": "x"}), 401)
    assert_nothing_published(client, app, watcher)


@pytest.mark.parametrize("kwargs, status, field", [
    (dict(raw=b"{nope", content_type="application/json"), 400, "body"),
    (dict(raw=b'{"broadcast": true, "message": "x"}', content_type="text/plain"), 415, None),
    (dict(raw=b'{"broadcast": true, "message": "x"}', content_type=None), 415, None),
    (dict(body={"message": "no target"}), 422, "target"),
    (dict(body={"user_id": "alice", "message": "x", "colour": "red"}), 422, "colour"),
    (dict(body={"user_id": ["alice"], "message": "x"}), 422, "user_id"),
    (dict(body={"user_id": "alice\r\nevent: forged", "message": "x"}), 422, "user_id"),
    (dict(body={"topic": "orders:1\n", "message": "x"}), 422, "topic"),
    (dict(body={"user_id": "alice", "message": "x", "type": "a\nid: 1"}), 422, "type"),
    (dict(body={"user_id": "alice", "message": "x", "type": "nul\x00"}), 422, "type"),
    (dict(body={"user_id": "alice", "message": "x" * (64 * 1024 + 1)}), 413, "message"),
    (dict(body={"user_id": "alice", "message": "x", "data": {"b": "y" * (64 * 1024)}}), 413, "data"),
    (dict(body=[{"user_id": "alice", "message": "ok"}, {"user_id": "alice", "message": 5}]), 422, "message"),
    (dict(body=[{"broadcast": True, "message": "x"}] * 101), 422, "body"),
    (dict(body=[]), 422, "body"),
])
def test_bad_publish_bodies_are_refused_whole(client, app, watcher, kwargs, status, field) -> None:
    response = post(client, token=tokens.publisher(), **kwargs)
    error = assert_json_error(response, status)
    if field:
        assert error.get("field") == field, error
    assert_nothing_published(client, app, watcher)


def test_huge_body_is_413_before_parsing(client, app, watcher) -> None:
    raw = b"[" + b",".join([b'{"broadcast":true,"message":"' + b"x" * 64000 + b'"}'] * 220) + b"]"
    assert_json_error(post(client, token=tokens.publisher(), raw=raw), 413)
    assert_nothing_published(client, app, watcher)


def test_scoped_publisher(client, app, watcher) -> None:
    scoped = tokens.publisher("shop", topics=["orders:*"])
    assert post(client, {"topic": "orders:1", "message": "ok"}, scoped).status_code == 202
    next(watcher)
    for body in ({"user_id": "alice", "message": "x"}, {"broadcast": True, "message": "x"},
                 {"topic": "billing:1", "message": "x"},
                 [{"topic": "orders:1", "message": "fine"}, {"user_id": "alice", "message": "not allowed"}]):
        assert_json_error(post(client, body, scoped), 403, "forbidden")
    assert next(watcher) == b":\n\n", "a refused batch publishes nothing, not even its allowed part"
    users_only = tokens.publisher("mailer", users=["a*"])
    assert post(client, {"user_id": "alice", "message": "ok"}, users_only).status_code == 202
    assert_json_error(post(client, {"user_id": "bob", "message": "x"}, users_only), 403)


@pytest.mark.parametrize("raw, status, field", [
    (b'{"user_id": "alice", "message": "x", "data": {"v": NaN}}', 400, "body"),
    (b'{"user_id": "alice", "message": "x", "data": {"v": Infinity}}', 400, "body"),
    (b"[" * 200_000, 400, "body"),
])
def test_non_json_constants_and_deep_nesting_are_client_errors(client, app, watcher, raw, status, field) -> None:
    error = assert_json_error(post(client, token=tokens.publisher(), raw=raw), status)
    assert error["field"] == field
    assert_nothing_published(client, app, watcher)


def test_a_request_may_not_expand_beyond_its_budget(client, app, watcher) -> None:
    users = [f"user{i}" for i in range(200)]
    body = {"user_ids": users, "message": "x" * 40_000}  # 200 x 40 KB = 8 MB > 64 KiB x 100
    error = assert_json_error(post(client, body, tokens.publisher()), 413)
    assert error["field"] == "body" and "topic" in error["message"]
    assert_nothing_published(client, app, watcher)
    assert post(client, {"user_ids": users, "message": "small"}, tokens.publisher()).status_code == 202
