"""``notifier.compat.flask_sse``: flask-sse's surface (the ``sse`` blueprint,
``publish``, ``?channel=``, ``Message``, ``SSE_REDIS_URL`` / ``REDIS_URL``) on
notifier's delivery, through the unbuffered Werkzeug client, with the
embedded broker and a real redis-server. The quickstart app in Chromium is
tests/e2e/test_flask_sse_quickstart.py."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from flask import Flask, abort, request

from notifier import Notifier
from notifier.compat.flask_sse import Message, ServerSentEventsBlueprint, flask_sse_frame, sse
from notifier.config import ConfigError
from notifier.errors import InvalidEvent, PayloadTooLarge

from ..support.config import make_config
from ..support.http import assert_json_error, events_in


@pytest.fixture(autouse=True)
def quiet_environment(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """The compat reads NOTIFIER_* itself: none of the developer's, short heartbeats."""
    import os

    for name in list(os.environ):
        if name.startswith("NOTIFIER_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("NOTIFIER_HEARTBEAT_SECONDS", "0.2")
    monkeypatch.setenv("NOTIFIER_DEV_SECRET_FILE", str(tmp_path / "dev-secret"))


@pytest.fixture(params=["memory", "redis"])
def quickstart(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, prefix: str) -> Iterator[Flask]:
    """flask-sse's quickstart app: REDIS_URL in the app's config, the blueprint at /stream."""
    app = Flask("quickstart")
    if request.param == "redis":
        app.config["REDIS_URL"] = request.getfixturevalue("redis_server").url
        monkeypatch.setenv("NOTIFIER_REDIS_PREFIX", prefix)
    app.register_blueprint(sse, url_prefix="/stream")

    @app.route("/hello")
    def publish_hello():
        sse.publish({"message": "Hello!"}, type="greeting")
        return "Message sent!"

    yield app
    app.extensions["notifier"].stop()


def stream(client, query: str = "", headers: dict[str, str] | None = None):
    response = client.get("/stream" + query, headers=headers or {}, buffered=False)
    return response, iter(response.response)


def read(chunks: Iterator[bytes], count: int) -> list:
    found: list = []
    for _ in range(count * 4 + 4):  # heartbeats come between events
        found.extend(events_in(next(chunks)))
        if len(found) >= count:
            break
    assert len(found) == count
    return found


def test_the_quickstart_greeting_arrives_framed_as_flask_sse_frames_it(quickstart: Flask) -> None:
    client = quickstart.test_client()
    response, chunks = stream(client)
    assert response.status_code == 200 and response.mimetype == "text/event-stream"
    first = next(chunks)
    assert first.startswith(b"retry: ")
    assert client.get("/hello").get_data(as_text=True) == "Message sent!"
    [greeting] = read(chunks, 1)
    assert greeting.event == "greeting"
    assert greeting.data == '{"message": "Hello!"}', "flask.json.dumps, as flask-sse"
    assert json.loads(greeting.data)["message"] == "Hello!"
    assert greeting.id and greeting.id.count("-") == 1, "notifier's id: what a reconnect resumes from"
    response.close()


def test_data_type_retry_and_id(quickstart: Flask) -> None:
    client = quickstart.test_client()
    response, chunks = stream(client)
    next(chunks)
    with quickstart.app_context():
        sse.publish("plain text\nsecond line\u2028same line")
        sse.publish([1, 2], type="numbers", retry=5000, id="my-7")
        sse.publish(" leading space")
    text, numbers, spaced = read(chunks, 3)
    assert (text.event, text.data) == ("message", "plain text\nsecond line\u2028same line"), "no event: line, as flask-sse"
    assert (numbers.event, numbers.data, numbers.retry) == ("numbers", "[1, 2]", 5000), "retry is honoured"
    assert numbers.id != "my-7", "the SSE id is notifier's (documented difference)"
    assert spaced.data == " leading space"
    stored = quickstart.extensions["notifier"].core.history.recent(
        [quickstart.extensions["notifier"].names.topic("sse:sse")], None, 10)
    envelope = json.loads(stored[1].payload)
    assert envelope["topic"] == "sse:sse" and envelope["data"] == {"flask_sse": {"id": "my-7", "retry": 5000}}
    plain = stored[2]
    assert flask_sse_frame(plain) == (f"id: {text.id}\ndata: plain text\ndata: second line\u2028same line\n\n"
                                      .encode()), "no event: line for no type, as flask-sse sends it"
    response.close()


def test_a_channel_gets_its_own_events_only(quickstart: Flask) -> None:
    client = quickstart.test_client()
    social, social_chunks = stream(client, "?channel=users.social")
    default, default_chunks = stream(client)
    next(social_chunks), next(default_chunks)
    with quickstart.app_context():
        receivers = sse.publish({"user": "alice", "status": "Life is good!"}, channel="users.social")
        assert receivers == 1, "one worker (Redis) or one stream (embedded) had a subscriber"
        sse.publish({"active_users": 100}, channel="analytics")
        sse.publish("for the default channel")
    [status] = read(social_chunks, 1)
    [default_event] = read(default_chunks, 1)
    assert json.loads(status.data) == {"user": "alice", "status": "Life is good!"}
    assert default_event.data == "for the default channel"
    assert next(social_chunks) == b":\n\n", "nothing else on users.social: a heartbeat"
    social.close(), default.close()


def test_a_reconnect_with_last_event_id_replays_what_it_missed(quickstart: Flask) -> None:
    client = quickstart.test_client()
    response, chunks = stream(client)
    next(chunks)
    with quickstart.app_context():
        sse.publish("one")
    [one] = read(chunks, 1)
    response.close()
    with quickstart.app_context():
        sse.publish("two", type="update")
        sse.publish("three")
    response, chunks = stream(client, headers={"Last-Event-ID": one.id})
    replayed = events_in(next(chunks))
    assert [(event.event, event.data) for event in replayed] == [("update", "two"), ("message", "three")]
    response.close()


def test_events_published_to_the_topic_by_notifier_itself_reach_compat_streams(quickstart: Flask) -> None:
    notifier_state = quickstart.extensions["notifier"]
    client = quickstart.test_client()
    response, chunks = stream(client, "?channel=orders")
    next(chunks)
    from notifier.inprocess import publish_item, target_item

    publish_item(notifier_state, target_item("topic", "sse:orders", "Packed", "order.packed", {"order": 7}), False)
    [packed] = read(chunks, 1)
    assert (packed.event, packed.data) == ("order.packed", "Packed")
    response.close()


def test_compat_streams_never_read_a_user_s_channel_or_the_broadcast(quickstart: Flask) -> None:
    state = quickstart.extensions["notifier"]
    client = quickstart.test_client()
    response, chunks = stream(client, "?channel=user:alice")
    next(chunks)
    from notifier.inprocess import publish_item, target_item

    publish_item(state, target_item("user_id", "alice", "private", None, None), False)
    publish_item(state, target_item("broadcast", True, "everyone", None, None), False)
    assert next(chunks) == b":\n\n", "a heartbeat, not alice's or the broadcast's events"
    with quickstart.app_context():
        sse.publish("on the compat channel", channel="user:alice")
    [event] = read(chunks, 1)
    assert event.data == "on the compat channel"
    response.close()


@pytest.mark.parametrize("query", ["?channel=no%20spaces", "?channel=line%0Abreak", "?channel=" + "x" * 197,
                                   "?channel=%C3%A9t%C3%A9"])
def test_a_channel_notifier_cannot_carry_is_a_400_and_subscribes_nothing(quickstart: Flask, query: str) -> None:
    client = quickstart.test_client()
    error = assert_json_error(client.get("/stream" + query), 400, "bad_request")
    assert error["field"] == "channel"
    state = quickstart.extensions["notifier"]
    assert len(state.hub) == 0 and state.hub.channels() == [], "nothing subscribed"
    assert state.admission.open == 0, "no stream admitted"


@pytest.mark.parametrize("kwargs, error, field", [
    (dict(channel="no spaces"), InvalidEvent, "channel"),
    (dict(channel=""), InvalidEvent, "channel"),
    (dict(channel=None), InvalidEvent, "channel"),
    (dict(type="bad type"), InvalidEvent, "type"),
    (dict(type="x\nevent: forged"), InvalidEvent, "type"),
    (dict(retry=-1), InvalidEvent, "retry"),
    (dict(retry="5000"), InvalidEvent, "retry"),
    (dict(data="x" * 70_000), PayloadTooLarge, "message"),
    (dict(data="\ud800"), InvalidEvent, "message"),
])
def test_what_notifier_cannot_carry_is_refused_and_nothing_is_published(quickstart: Flask, kwargs, error,
                                                                          field) -> None:
    arguments = {"data": {"message": "Hello!"}, **kwargs}
    with quickstart.app_context():
        with pytest.raises(error) as raised:
            sse.publish(**arguments)
    assert raised.value.field == field
    assert quickstart.extensions["notifier"].core.history.last_id() == (0, 0)


def test_access_control_with_before_request_as_flask_sse_documents() -> None:
    guarded = ServerSentEventsBlueprint("guarded", __name__)
    guarded.add_url_rule(rule="", endpoint="stream", view_func=guarded.stream)

    @guarded.before_request
    def check_access():
        if request.args.get("channel") == "analytics":
            abort(403)

    app = Flask("guarded_app")
    app.register_blueprint(guarded, url_prefix="/sse")
    client = app.test_client()
    assert client.get("/sse?channel=analytics").status_code == 403
    response = client.get("/sse?channel=public", buffered=False)
    assert response.status_code == 200
    response.close()
    app.extensions["notifier"].stop()


def test_anonymous_streams_are_capped_per_worker_not_per_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFIER_MAX_STREAMS_PER_USER", "1")
    monkeypatch.setenv("NOTIFIER_MAX_STREAMS_PER_WORKER", "2")
    app = Flask("capped")
    app.register_blueprint(sse, url_prefix="/stream")
    client = app.test_client()
    first, second = stream(client)[0], stream(client)[0]
    assert first.status_code == second.status_code == 200, "two anonymous streams, over a per-user cap of 1"
    assert_json_error(client.get("/stream"), 503, "worker_full")
    first.close(), second.close()
    app.extensions["notifier"].stop()


def test_the_redis_url_comes_from_sse_redis_url_then_redis_url_and_the_environment_wins(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def configured(**settings: str) -> str | None:
        app = Flask("configured")
        app.config.update(settings)
        app.register_blueprint(sse, url_prefix="/stream")
        return app.extensions["notifier"].config.redis_url

    assert configured() is None, "none: the embedded broker"
    assert configured(REDIS_URL="redis://r:1/0") == "redis://r:1/0"
    assert configured(REDIS_URL="redis://r:1/0", SSE_REDIS_URL="redis://s:2/0") == "redis://s:2/0"
    monkeypatch.setenv("NOTIFIER_REDIS_URL", "redis://env:3/0")
    assert configured(REDIS_URL="redis://r:1/0", SSE_REDIS_URL="redis://s:2/0") == "redis://env:3/0"
    monkeypatch.delenv("NOTIFIER_REDIS_URL")
    with pytest.raises(ConfigError) as bad:
        configured(SSE_REDIS_URL="http://s:2/0")
    assert "SSE_REDIS_URL" in str(bad.value)


def test_mounting_touches_no_jwt_setting_and_reuses_a_notifier_already_mounted(tmp_path) -> None:
    app = Flask("plain")
    app.register_blueprint(sse, url_prefix="/stream")
    assert not any(key.startswith("JWT_") for key in app.config), "no JWT settings for anonymous streams"
    assert "flask-jwt-extended" not in app.extensions
    assert not (tmp_path / "dev-secret").exists(), "no development secret made"
    app.extensions["notifier"].stop()

    host = Flask("host")
    notifier = Notifier(host, make_config())
    state = host.extensions["notifier"]
    host.register_blueprint(sse, url_prefix="/stream")
    assert host.extensions["notifier"] is state, "the host's notifier delivers the compat's events too"
    with host.app_context():
        sse.publish("hi")
    assert state.core.history.last_id() != (0, 0)
    assert notifier._state() is state
    state.stop()


def test_redis_and_messages_are_not_offered() -> None:
    with pytest.raises(NotImplementedError, match=r"sse\.publish"):
        sse.redis  # noqa: B018
    with pytest.raises(NotImplementedError, match="one pub/sub connection per worker"):
        sse.messages()


def test_message_keeps_flask_sse_s_surface() -> None:
    message = Message({"a": 1}, type="greeting", id="7", retry=100)
    assert message.to_dict() == {"data": {"a": 1}, "type": "greeting", "id": "7", "retry": 100}
    assert Message("x").to_dict() == {"data": "x"}
    assert repr(message) == "Message({'a': 1}, type='greeting', id='7', retry=100)"
    assert message == Message({"a": 1}, type="greeting", id="7", retry=100) != Message({"a": 1})
    assert str(message) == 'id: 7\nevent: greeting\nretry: 100\ndata: {"a": 1}\n\n'
    assert str(Message("one\r\ntwo")) == "data: one\ndata: two\n\n"


def test_a_frame_is_built_once_per_event_whatever_the_number_of_streams(quickstart: Flask) -> None:
    client = quickstart.test_client()
    streams = [stream(client) for _ in range(3)]
    for _, chunks in streams:
        next(chunks)
    flask_sse_frame.cache_clear()
    with quickstart.app_context():
        sse.publish("to all three")
    frames = {read(chunks, 1)[0].data for _, chunks in streams}
    assert frames == {"to all three"}
    assert flask_sse_frame.cache_info().misses == 1
    for response, _ in streams:
        response.close()
