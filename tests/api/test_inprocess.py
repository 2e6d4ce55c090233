"""Publishing from the host's own views, in process: the same validation and
envelope as POST /v1/publish, whatever the broker, and ``after_request=True``
sends only once the request has succeeded."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from flask import Flask, abort, jsonify

from notifier import Notifier
from notifier.errors import InvalidEvent, PayloadTooLarge

from ..support import tokens
from ..support.config import make_config
from ..support.http import events_in, open_stream, publish


@pytest.fixture(params=["memory", "redis"])
def host(request: pytest.FixtureRequest, prefix: str) -> Iterator[tuple[Flask, Notifier]]:
    overrides: dict[str, object] = {}
    if request.param == "redis":
        overrides = dict(redis_url=request.getfixturevalue("redis_server").url, redis_prefix=prefix)
    app = Flask("shop")
    notifier = Notifier(app, make_config(**overrides))

    @app.post("/orders/<int:order>/ship")
    def ship(order: int):
        notifier.notify("alice", f"Order {order} shipped", type="order.shipped", data={"order": order},
                        after_request=True)
        before = app.extensions["notifier"].core.history.last_id()
        if order == 500:
            raise RuntimeError("the database said no")  # rolled back: must not be announced
        if order == 409:
            abort(409)
        if order == 422:
            return jsonify(error="invalid"), 422
        return jsonify(published_before_response=list(before) != [0, 0])

    @app.post("/orders/<int:order>/ship-twice")
    def ship_twice(order: int):
        notifier.notify("alice", "one", after_request=True)
        notifier.broadcast("two", after_request=True)
        return "ok"

    app.logger.disabled = True  # the deliberate 500 below
    yield app, notifier
    app.extensions["notifier"].stop()


def read_events(chunks: Iterator[bytes], count: int) -> list:
    found: list = []
    for _ in range(count):  # at least one event per chunk
        found.extend(events_in(next(chunks)))
        if len(found) >= count:
            break
    assert len(found) == count
    return found


def test_notify_broadcast_and_topic_reach_streams_like_the_http_api(host) -> None:
    app, notifier = host
    client = app.test_client()
    response, chunks = open_stream(client, tokens.bearer(tokens.token("alice", topics=["orders:*"])),
                                   "?topic=orders:7")
    next(chunks)
    with app.app_context():
        published = notifier.notify("alice", "Shipped", type="order.shipped", data={"order": 7})
        assert published is not None and published.receivers == 1
        notifier.broadcast("Maintenance at noon")
        notifier.publish_topic("orders:7", "Packed", data={"step": 2})
    mine, everyone, topic = read_events(chunks, 3)
    assert mine.id == published.id and mine.event == "order.shipped"
    assert (everyone.json()["broadcast"], everyone.event) == (True, "notification")
    assert topic.json()["topic"] == "orders:7" and topic.json()["data"] == {"step": 2}

    # Byte for byte the HTTP API's envelope, but for the id and the timestamp.
    assert publish(client, {"user_id": "alice", "type": "order.shipped", "message": "Shipped",
                            "data": {"order": 7}}).status_code == 202
    [over_http_event] = read_events(chunks, 1)
    over_http = over_http_event.json()
    in_process = mine.json()
    for body in (over_http, in_process):
        body.pop("id"), body.pop("timestamp")
    assert json.dumps(in_process) == json.dumps(over_http)
    response.close()


@pytest.mark.parametrize("call, error, field", [
    (lambda n, **kw: n.notify("", "m", **kw), InvalidEvent, "user_id"),
    (lambda n, **kw: n.notify("a\nb", "m", **kw), InvalidEvent, "user_id"),
    (lambda n, **kw: n.notify("alice", "m", type="bad type\n", **kw), InvalidEvent, "type"),
    (lambda n, **kw: n.notify("alice", "m", data={"x": float("nan")}, **kw), InvalidEvent, "data"),
    (lambda n, **kw: n.notify("alice", 42, **kw), InvalidEvent, "message"),
    (lambda n, **kw: n.notify("alice", "x" * 70_000, **kw), PayloadTooLarge, "message"),
    (lambda n, **kw: n.publish_topic("no spaces", "m", **kw), InvalidEvent, "topic"),
    (lambda n, **kw: n.broadcast("\ud800", **kw), InvalidEvent, "message"),
])
def test_bad_input_is_refused_at_once_and_nothing_is_published(host, call, error, field) -> None:
    app, notifier = host
    for deferred in (False, True):
        with app.test_request_context():
            with pytest.raises(error) as raised:
                call(notifier, after_request=deferred)
            assert raised.value.field == field
    assert app.extensions["notifier"].core.history.last_id() == (0, 0)


def test_after_request_sends_only_once_the_request_succeeded(host) -> None:
    app, _ = host
    client = app.test_client()
    history = app.extensions["notifier"].core.history
    response = client.post("/orders/7/ship")
    assert response.status_code == 200
    assert response.get_json() == {"published_before_response": False}, "held until the request is over"
    assert [json.loads(d.payload)["data"] for d in history.recent(_alice(app), None, 10)] == [{"order": 7}]
    for failing in (500, 409, 422):
        response = client.post(f"/orders/{failing}/ship")
        assert response.status_code == failing
    assert len(history.recent(_alice(app), None, 10)) == 1, "failed requests announced nothing"
    client.post("/orders/1/ship-twice")
    assert [json.loads(d.payload)["message"] for d in history.recent(_alice(app), None, 10)][:2] == ["two", "one"]


def _alice(app: Flask) -> list[str]:
    return app.extensions["notifier"].names.for_subscriber("alice", [])


def test_after_request_needs_a_request(host) -> None:
    app, notifier = host
    with app.app_context():
        with pytest.raises(RuntimeError, match="needs a request"):
            notifier.notify("alice", "m", after_request=True)
    assert app.extensions["notifier"].core.history.last_id() == (0, 0)


def test_a_notifier_with_one_app_publishes_outside_any_context(host) -> None:
    app, notifier = host
    assert notifier.notify("alice", "from a background job") is not None
    assert len(app.extensions["notifier"].core.history.recent(_alice(app), None, 5)) == 1
