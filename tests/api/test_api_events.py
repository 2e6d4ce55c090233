"""GET /v1/events and /v1/notifications through the unbuffered Werkzeug client
(embedded broker): auth, topics, headers, framing, heartbeats, deadlines."""

from __future__ import annotations

import gc
import json
import time
import weakref

import pytest

from notifier import create_app

from ..support import tokens
from ..support.config import make_config
from ..support.http import assert_json_error, events_in, open_stream, publish


@pytest.mark.parametrize("headers, query, why", [
    ({}, "", "missing"),
    (tokens.bearer(tokens.token(secret="another-secret-" + "y" * 40)), "", "bad signature"),
    (tokens.bearer(tokens.token(algorithm="HS512")), "", "wrong algorithm"),
    (tokens.bearer(tokens.unsigned()), "", "alg none"),
    (tokens.bearer(tokens.token(ttl=-60)), "", "expired"),
    (tokens.bearer(tokens.token(token_type="refresh")), "", "refresh token"),
    (tokens.bearer("not.a.jwt"), "", "garbage"),
    ({"Authorization": "Basic YWxpY2U6cHc="}, "", "wrong scheme"),
    ({}, f"?token={tokens.token()}", "query string token"),
    ({}, f"?access_token={tokens.token()}", "query string token"),
])
def test_subscribe_auth_failures_are_401_json(client, app, headers, query, why) -> None:
    response, _ = open_stream(client, headers, query)
    assert_json_error(response, 401, "unauthorized")
    assert "text/event-stream" not in response.content_type
    assert len(app.extensions["notifier"].hub) == 0, f"{why}: nothing may stay subscribed"


def test_query_token_error_explains_why(client) -> None:
    response, _ = open_stream(client, {}, f"?token={tokens.token()}")
    assert "query string" in assert_json_error(response, 401)["message"]


def test_publisher_credentials_cannot_subscribe(client) -> None:
    response, _ = open_stream(client, tokens.bearer(tokens.publisher()))
    assert_json_error(response, 403, "forbidden")


def test_stream_headers_and_first_chunk_come_at_once(client) -> None:
    response, chunks = open_stream(client, tokens.bearer(tokens.token("alice")))
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/event-stream; charset=utf-8"
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["X-Accel-Buffering"] == "no"
    assert "Content-Length" not in response.headers
    started = time.monotonic()
    first = next(chunks)
    assert time.monotonic() - started < 0.1
    assert first.startswith(b"retry: 100\n\n: connected\n\n")
    response.close()


def test_cookie_auth_and_delivery(client, app) -> None:
    client.set_cookie("notifier_access", tokens.token("alice"), domain="localhost")
    response, chunks = open_stream(client)
    assert response.status_code == 200
    next(chunks)
    assert publish(client, {"user_id": "alice", "type": "order.shipped", "message": "Shipped!\n\u2028ok",
                            "data": {"order": 7}}).status_code == 202
    [event] = events_in(next(chunks))
    body = event.json()
    assert event.event == "order.shipped" and event.id == body["id"]
    assert body["user_id"] == "alice" and body["message"] == "Shipped!\n\u2028ok" and body["data"] == {"order": 7}
    assert body["type"] == "order.shipped" and body["timestamp"].endswith("Z")
    response.close()
    assert len(app.extensions["notifier"].hub) == 0, "closing the response unsubscribes"


def test_users_only_receive_what_is_theirs(client) -> None:
    streams = {}
    for user in ("alice", "bob"):
        response, chunks = open_stream(client, tokens.bearer(tokens.token(user)))
        next(chunks)
        streams[user] = (response, chunks)
    publish(client, {"user_id": "bob", "message": "for bob"})
    publish(client, {"broadcast": True, "message": "for all"})
    alice_events = events_in(next(streams["alice"][1]))
    assert [e.json()["message"] for e in alice_events] == ["for all"]
    bob_events = events_in(next(streams["bob"][1]))
    assert [e.json()["message"] for e in bob_events] == ["for bob", "for all"]
    for response, _ in streams.values():
        response.close()


def test_topics_need_a_grant(client) -> None:
    granted = tokens.bearer(tokens.token("alice", topics=["orders:*", "news"]))
    response, chunks = open_stream(client, granted, "?topic=orders:42&topic=news")
    assert response.status_code == 200
    next(chunks)
    publish(client, {"topic": "orders:42", "message": "order update"})
    publish(client, {"topic": "orders:43", "message": "someone else's order"})
    [event] = events_in(next(chunks))
    assert event.json() ["topic"] == "orders:42"
    response.close()
    for query, status in (("?topic=billing", 403), ("?topic=orders", 403), ("?topic=bad%0Atopic", 400),
                          ("?topic=" + "&topic=".join(f"news{i}" for i in range(30)), 400)):
        response, _ = open_stream(client, granted, query)
        assert_json_error(response, status)
    response, _ = open_stream(client, tokens.bearer(tokens.token("bob")), "?topic=orders:42")
    assert_json_error(response, 403, "forbidden")


def test_heartbeat_comments_keep_the_stream_alive() -> None:
    # The heartbeat (0.6 s) and the other short interval a stream knows, the
    # client's retry (0.1 s), lie far apart: a heartbeat taken from the wrong
    # setting comes at least 0.25 s before the lower bound (the hub's alarm
    # clock wakes a stream at most a quarter of a heartbeat late).
    app = create_app(make_config(heartbeat_seconds=0.6, retry_ms=100))
    try:
        response, chunks = open_stream(app.test_client(), tokens.bearer(tokens.token("alice")))
        assert next(chunks).startswith(b"retry: 100\n\n")
        started = time.monotonic()
        assert next(chunks) == b":\n\n"
        assert 0.5 < time.monotonic() - started < 1.2
        response.close()
    finally:
        app.extensions["notifier"].stop()


def test_stream_ends_when_the_token_expires(client, app) -> None:
    token = tokens.token("alice", ttl=2)
    expires_at = json.loads(__import__("base64").urlsafe_b64decode(token.split(".")[1] + "=="))["exp"]
    response, chunks = open_stream(client, tokens.bearer(token))
    rest = b"".join(chunks)  # ends by itself
    assert abs(time.time() - expires_at) < 0.5
    assert b"data:" not in rest
    assert len(app.extensions["notifier"].hub) == 0


def test_resume_with_last_event_id_replays_in_order(client) -> None:
    ids = [publish(client, {"user_id": "alice", "message": str(i)}).get_json()["published"][0]["id"] for i in range(4)]
    publish(client, {"user_id": "bob", "message": "not alice's"})
    response, chunks = open_stream(client, {**tokens.bearer(tokens.token("alice")), "Last-Event-ID": ids[1]})
    replayed = events_in(next(chunks))
    assert [e.id for e in replayed] == ids[2:]
    live_id = publish(client, {"user_id": "alice", "message": "live"}).get_json()["published"][0]["id"]
    [live] = events_in(next(chunks))
    assert live.json()["message"] == "live" and live.id == live_id
    response.close()
    # The query parameter works for the first connect after a page load.
    response, chunks = open_stream(client, tokens.bearer(tokens.token("alice")), f"?last_event_id={ids[2]}")
    assert [e.id for e in events_in(next(chunks))] == [ids[3], live_id]
    response.close()


@pytest.mark.parametrize("bad", ["garbage", "99999999999999-0"])
def test_unknown_last_event_id_gets_a_reset_event(client, bad) -> None:
    publish(client, {"user_id": "alice", "message": "x"})
    response, chunks = open_stream(client, {**tokens.bearer(tokens.token("alice")), "Last-Event-ID": bad})
    [reset] = events_in(next(chunks))
    assert reset.event == "reset" and reset.json()["reason"] == "unknown_id"
    assert reset.id == reset.json()["resume_from"], "moves the browser's Last-Event-ID forward"
    response.close()


def test_recent_notifications_newest_first_with_resume_point(client) -> None:
    ids = [publish(client, {"user_id": "alice", "message": str(i)}).get_json()["published"][0]["id"] for i in range(3)]
    publish(client, {"broadcast": True, "message": "all"})
    newest = publish(client, {"user_id": "bob", "message": "not alice's"}).get_json()["published"][0]["id"]
    headers = tokens.bearer(tokens.token("alice"))
    body = client.get("/v1/notifications?limit=3", headers=headers).get_json()
    assert [n["message"] for n in body["notifications"]] == ["all", "2", "1"]
    assert body["next_before"] == ids[1]
    older = client.get(f"/v1/notifications?limit=3&before={body['next_before']}", headers=headers).get_json()
    assert [n["message"] for n in older["notifications"]] == ["0"] and older["next_before"] is None
    assert body["resume_from"] == newest, "the newest position overall, so the stream misses nothing"
    assert_json_error(client.get("/v1/notifications?limit=0", headers=headers), 400)
    assert_json_error(client.get("/v1/notifications?before=x", headers=headers), 400)
    assert_json_error(client.get("/v1/notifications"), 401)


def test_health_and_drain(client, app) -> None:
    assert client.get("/livez").get_json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200
    response, chunks = open_stream(client, tokens.bearer(tokens.token("alice")))
    next(chunks)
    app.extensions["notifier"].drain(window=0)
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.get_json()["reason"] == "draining"
    refused, _ = open_stream(client, tokens.bearer(tokens.token("bob")))
    assert_json_error(refused, 503, "draining")
    assert refused.headers["Retry-After"]
    tail = b"".join(chunks)  # the drain ends the open stream with a fresh retry:
    assert tail.startswith(b"retry: ")


def test_metrics_and_json_errors_for_unknown_routes(client) -> None:
    text = client.get("/metrics").get_data(as_text=True)
    for name in ("notifier_streams_open", "notifier_events_published_total", "notifier_stream_disconnects_total"):
        assert name in text
    assert_json_error(client.get("/nope"), 404)
    assert_json_error(client.delete("/v1/events"), 405)


def test_request_id_is_echoed_or_made(client) -> None:
    assert client.get("/livez", headers={"X-Request-ID": "abc-123"}).headers["X-Request-ID"] == "abc-123"
    made = client.get("/livez", headers={"X-Request-ID": "bad id\twith tab"}).headers["X-Request-ID"]
    assert made and " " not in made


def test_dev_page_only_in_development() -> None:
    dev = create_app(make_config(dev_page=True))
    with_real_secret = create_app(make_config())  # development mode, but not the generated secret
    prod = create_app(make_config(env="production"))
    try:
        assert b'import { connect, newer } from "/v1/client.js"' in dev.test_client().get("/").data
        assert prod.test_client().get("/").status_code == 404
        assert with_real_secret.test_client().post("/dev/login", data={"user": "x"}).status_code == 404
    finally:
        with_real_secret.extensions["notifier"].stop()
        dev.extensions["notifier"].stop()
        prod.extensions["notifier"].stop()


def test_head_does_not_subscribe_or_leak(client, app) -> None:
    state = app.extensions["notifier"]
    for _ in range(3):
        response = client.head("/v1/events", headers=tokens.bearer(tokens.token("alice")))
        assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/event-stream")
    assert len(state.hub) == 0 and state.hub.channels() == []
    assert client.head("/v1/events").status_code == 401


def test_a_body_closed_after_its_first_chunk_releases_its_subscription(client, app) -> None:
    response, _chunks = open_stream(client, tokens.bearer(tokens.token("alice")))
    assert len(app.extensions["notifier"].hub) == 1
    response.close()  # Werkzeug's client has read the first chunk, the test nothing
    assert len(app.extensions["notifier"].hub) == 0


def test_a_body_the_server_drops_unread_releases_its_subscription(app) -> None:
    from werkzeug.test import EnvironBuilder

    environ = EnvironBuilder(path="/v1/events", headers=tokens.bearer(tokens.token("alice"))).get_environ()
    statuses: list[str] = []
    body = app.wsgi_app(environ, lambda status, headers, exc_info=None: statuses.append(status))
    assert statuses == ["200 OK"] and len(app.extensions["notifier"].hub) == 1
    del body  # never iterated, never closed: the generator's finally never runs
    assert len(app.extensions["notifier"].hub) == 0


def _unstarted_body_finalizers() -> list[weakref.finalize]:
    return [f for f in gc.get_objects() if isinstance(f, weakref.finalize) and f.alive
            and getattr(f.peek()[0], "__name__", None) == "event_stream"]


def test_a_started_body_drops_the_finalizer_kept_for_a_body_never_started(app) -> None:
    from werkzeug.test import EnvironBuilder

    environ = EnvironBuilder(path="/v1/events", headers=tokens.bearer(tokens.token("alice"))).get_environ()
    gc.collect()  # an unstarted body another test left behind would be finalized mid-count
    before = len(_unstarted_body_finalizers())
    body = app.wsgi_app(environ, lambda status, headers, exc_info=None: None)
    assert len(_unstarted_body_finalizers()) == before + 1
    assert next(iter(body)).startswith(b"retry:")
    # From its first step the generator's own finally releases the stream:
    # the finalizer would only be kept for the stream's life (~0.5 KiB).
    assert len(_unstarted_body_finalizers()) == before
    body.close()
    assert len(app.extensions["notifier"].hub) == 0


@pytest.mark.parametrize("gunicorn_reads_it_later", [False, True])
def test_a_streams_environ_is_emptied_once_it_opens_unless_gunicorn_reads_it_later(
        app, monkeypatch, gunicorn_reads_it_later) -> None:
    """The standalone app's door (LeanPublish) empties the environ of a stream
    it opened, as runtime/gunicorn decided for this worker (note_worker; its
    own tests judge gunicorn's settings): it holds the token for hours."""
    from werkzeug.test import EnvironBuilder

    from notifier.runtime import gunicorn as gunicorn_runtime

    monkeypatch.setattr(gunicorn_runtime, "_environ_read_later", gunicorn_reads_it_later)
    environ = EnvironBuilder(path="/v1/events", headers=tokens.bearer(tokens.token("alice"))).get_environ()
    environ["wsgi.file_wrapper"] = object  # what gunicorn checks after the app returns: kept
    statuses: list[str] = []
    body = app(environ, lambda status, headers, exc_info=None: statuses.append(status))
    try:
        assert statuses == ["200 OK"]
        if gunicorn_reads_it_later:
            assert environ["HTTP_AUTHORIZATION"].startswith("Bearer ") and environ["PATH_INFO"] == "/v1/events"
        else:
            assert environ == {"wsgi.file_wrapper": object}
        assert next(iter(body)).startswith(b"retry:")  # the stream needs nothing more from it
        publish(app.test_client(), {"user_id": "alice", "message": "after"})
        assert [e.json()["message"] for e in events_in(next(iter(body)))] == ["after"]
    finally:
        body.close()
    assert len(app.extensions["notifier"].hub) == 0


def test_resume_with_nothing_to_replay_never_resends_older_events(client, app) -> None:
    ids = [publish(client, {"user_id": "alice", "message": str(i)}).get_json()["published"][0]["id"] for i in range(3)]
    state = app.extensions["notifier"]
    old = state.core.history.recent([state.names.user("alice")], None, 3)[-1]  # the first, oldest event
    response, chunks = open_stream(client, {**tokens.bearer(tokens.token("alice")), "Last-Event-ID": ids[-1]})
    assert next(chunks).startswith(b"retry:")
    # A late copy of an event the client already has (what a catch-up after a
    # pub/sub reconnect delivers) must be dropped.
    state.hub.dispatch(state.names.user("alice"), old)
    publish(client, {"user_id": "alice", "message": "new"})
    assert [e.json()["message"] for e in events_in(next(chunks))] == ["new"]
    response.close()


def test_tokens_without_expiry_are_refused(client) -> None:
    import jwt

    forever = jwt.encode({"sub": "alice", "type": "access"}, tokens.SECRET, algorithm="HS256")
    response, _ = open_stream(client, tokens.bearer(forever))
    assert "expiry" in assert_json_error(response, 401)["message"]
    publisher_forever = jwt.encode({"sub": "billing", "role": "publisher", "type": "access"}, tokens.SECRET,
                                   algorithm="HS256")
    assert_json_error(publish(client, {"broadcast": True, "message": "x"}, publisher_forever), 401)


def _stream_objects(besides: list[object]) -> list[object]:
    from notifier.api.events import StreamRecord
    from notifier.hub import Subscription
    from notifier.stream import StreamPlan

    # ``besides`` holds (so no id is reused) what other tests left alive.
    old = {id(o) for o in besides}
    return [o for o in gc.get_objects() if isinstance(o, (StreamRecord, StreamPlan, Subscription)) and id(o) not in old]


@pytest.mark.parametrize("read_first_chunk", [True, False])
def test_a_finished_stream_is_freed_without_the_garbage_collector(client, app, read_first_chunk) -> None:
    # Thousands of streams per worker: a stream that left a reference cycle
    # behind would wait for a full collection (notifier/worker_gc.py).
    registry = app.extensions["notifier"].metrics.registry

    def counts() -> tuple[float, float]:
        return (registry.get_sample_value("notifier_streams_open") or 0.0,
                registry.get_sample_value("notifier_stream_disconnects_total", {"reason": "client_gone"}) or 0.0)

    open_before, gone_before = counts()
    gc.collect()
    earlier = _stream_objects([])
    gc.disable()
    try:
        response, chunks = open_stream(client, tokens.bearer(tokens.token("alice")))
        if read_first_chunk:
            next(chunks)
            assert publish(client, {"user_id": "alice", "message": "hi"}).status_code == 202
            [event] = events_in(next(chunks))
            assert event.json()["message"] == "hi"
        assert len(_stream_objects(earlier)) == 3  # this stream's record, plan and subscription, alive
        response.close()
        del response, chunks
        assert _stream_objects(earlier) == [], "freed by reference counting alone"
    finally:
        gc.enable()
    # Ended by the generator's close and then by the response's close hook:
    # counted once.
    assert counts() == (open_before, gone_before + 1)


def test_a_stream_response_the_host_app_drops_releases_its_subscription() -> None:
    """A host app's after_request that fails replaces the stream's response
    with a 500: the body is never iterated, and its subscription (and Redis
    channels) must not stay behind."""
    from flask import Flask

    from notifier import Notifier

    host = Flask("host")

    @host.after_request
    def broken(response):  # type: ignore[no-untyped-def]
        raise RuntimeError("host hook failed")

    # Flask logs the failure with its traceback; pytest keeping that record
    # would keep the dropped response alive.
    host.logger.disabled = True
    Notifier(host, make_config())
    state = host.extensions["notifier"]
    registry = state.metrics.registry
    open_before = registry.get_sample_value("notifier_streams_open") or 0.0
    try:
        response = host.test_client().get("/v1/events", headers=tokens.bearer(tokens.token("alice")))
        assert response.status_code == 500
        # Flask's exception handling keeps the dropped response in a reference
        # cycle (exception, traceback, frame): it goes at the next collection.
        gc.collect()
        assert len(state.hub) == 0 and state.hub.channels() == []
        assert (registry.get_sample_value("notifier_streams_open") or 0.0) == open_before
    finally:
        state.stop()
