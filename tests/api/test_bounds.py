"""Bounds on what one request can put in or take out (issue 12): the nesting
of a publish's ``data`` (the same limit on every path), a list view that
survives any stored entry, pages capped in count and bytes, and cursors
checked before Redis sees them. Against the embedded broker and the
session's redis-server."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import gevent
import pytest

from notifier import Publisher, create_app
from notifier.config import Config
from notifier.errors import InvalidEvent
from notifier.validation import Limits, nesting_depth, validate_notification

from ..support import tokens
from ..support.config import make_config
from ..support.http import assert_json_error, publish
from ..support.processes import RedisServer

TS = "2026-01-01T00:00:00.000Z"


def started(app: Any) -> Any:
    """The app with its broker up: the first request starts it in this process."""
    state = app.extensions["notifier"]
    app.test_client().get("/livez")
    pump_until(lambda: state.core.health().ok)
    return app


def pump_until(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        gevent.sleep(0)


def counter(client: Any, series: str) -> float:
    """A series' value in this process's /metrics (counters are process-wide: compare deltas)."""
    for line in client.get("/metrics").get_data(as_text=True).splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{series} is not exposed")


def nested(depth: int) -> dict[str, Any]:
    """``data`` whose objects nest ``depth`` levels (``{}`` is 1)."""
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


@pytest.fixture(params=["memory", "redis"])
def any_app(request: Any, prefix: str) -> Iterator[Any]:
    overrides: dict[str, object] = {}
    if request.param == "redis":
        overrides = dict(redis_url=request.getfixturevalue("redis_server").url, redis_prefix=prefix)
    app = started(create_app(make_config(**overrides)))
    yield app
    app.extensions["notifier"].stop()


@pytest.fixture
def redis_app(redis_server: RedisServer, prefix: str) -> Iterator[Any]:
    app = started(create_app(make_config(redis_url=redis_server.url, redis_prefix=prefix, page_max_bytes=64 * 1024)))
    yield app
    app.extensions["notifier"].stop()


# --------------------------------------------------------------------------
# Finding 1: one nesting limit at publish, the same on every path
# --------------------------------------------------------------------------


def test_nesting_depth_counts_containers_without_recursion() -> None:
    assert nesting_depth({}, 32) == 1 and nesting_depth({"a": [1, {"b": []}]}, 32) == 4
    assert nesting_depth(nested(10_000), 32) == 33, "stops counting just past the limit, never recursing"


def test_both_http_doors_refuse_data_nested_past_the_limit(app, client) -> None:
    token = tokens.publisher()
    headers = {**tokens.bearer(token), "Content-Type": "application/json"}
    ok = json.dumps({"user_id": "alice", "message": "x", "data": nested(32)})
    deep = json.dumps({"user_id": "alice", "message": "x", "data": nested(33)})
    very_deep = json.dumps({"user_id": "alice", "message": "x", "data": nested(900)})
    answers = [client.post("/v1/publish", data=body, headers=headers) for body in (deep, very_deep, deep, very_deep)]
    # The first request verified the token, so the others took the lean path.
    for response in answers:
        error = assert_json_error(response, 422, "invalid_event")
        assert error["field"] == "data" and "32 levels" in error["message"]
    assert answers[0].get_data() == answers[2].get_data(), "the Flask view and the lean path answer alike"
    assert app.extensions["notifier"].core.history.last_id() == (0, 0), "nothing stored"
    assert client.post("/v1/publish", data=ok, headers=headers).status_code == 202


def test_the_limit_is_a_setting_and_the_python_publisher_applies_it(redis_server, prefix) -> None:
    config = Config.from_env({"NOTIFIER_REDIS_URL": redis_server.url, "NOTIFIER_REDIS_PREFIX": prefix,
                              "NOTIFIER_JWT_SECRET": tokens.SECRET, "NOTIFIER_MAX_DATA_DEPTH": "4"})
    assert config.max_data_depth == 4
    with Publisher.from_config(config) as publisher:
        with pytest.raises(InvalidEvent) as refused:
            publisher.notify("alice", "x", data=nested(5))
        assert refused.value.field == "data"
        publisher.notify("alice", "x", data=nested(4))
    # And in-process validation (what every path calls) with the default.
    with pytest.raises(InvalidEvent):
        validate_notification({"broadcast": True, "message": "x", "data": nested(33)}, Limits(), TS)


# --------------------------------------------------------------------------
# Finding 1: the list view survives any stored entry
# --------------------------------------------------------------------------


def _write_straight_into_the_stream(app: Any, user: str, after_id: str) -> list[str]:
    """What a buggy or older writer could leave in a history stream: an
    envelope nested far past the parser's limit, text that is not JSON, an
    entry without our field. Ids follow ``after_id``; the sequence moves on
    past them as the publish script would."""
    state = app.extensions["notifier"]
    client = state.core.history.client
    key = state.names.history_key(state.names.user(user))
    ms, seq = (int(part) for part in after_id.split("-"))
    deep_data = '{"a":' * 5000 + "1" + "}" * 5000
    written = []
    for offset, fields in enumerate([
        {"d": f'{{"id":"{ms}-{seq + 1}","user_id":"{user}","type":"notification","message":"deep","data":{deep_data},'
              '"timestamp":"2026-01-01T00:00:00.000Z"}'},
        {"d": "this is not an envelope"},
        {"x": "no d field"},
    ], start=1):
        entry_id = f"{ms}-{seq + offset}"
        client.xadd(key, fields, id=entry_id)
        written.append(entry_id)
    client.hset(state.names.sequence_key, mapping={"ms": ms, "seq": seq + 3})
    return written


def test_stored_entries_that_cannot_be_decoded_are_skipped_and_counted(redis_app) -> None:
    client = redis_app.test_client()
    first = publish(client, {"user_id": "alice", "message": "before"}).get_json()["published"][0]["id"]
    _write_straight_into_the_stream(redis_app, "alice", first)
    last = publish(client, {"user_id": "alice", "message": "after"}).get_json()["published"][0]["id"]
    headers = tokens.bearer(tokens.token("alice"))
    skipped_before = counter(client, "notifier_undecodable_entries_total")

    for _ in range(2):
        response = client.get("/v1/notifications", headers=headers)
        assert response.status_code == 200, response.get_data(as_text=True)[:300]
        assert [n["message"] for n in response.get_json()["notifications"]] == ["after", "before"]
    # Each list request reads the history for its page (3 skipped) and again, bounded, for the unread count.
    assert counter(client, "notifier_undecodable_entries_total") >= skipped_before + 6, "3 skipped on each of 2 pages"

    # A resume over them replays the good events around them.
    response = client.get("/v1/events", headers={**headers, "Last-Event-ID": first}, buffered=False)
    chunk = next(iter(response.response)).decode()
    response.close()
    assert f"id: {last}" in chunk and "event: reset" not in chunk


# --------------------------------------------------------------------------
# Finding 6: pages capped in count and bytes; the response says where to go on
# --------------------------------------------------------------------------


def test_limit_is_capped(any_app) -> None:
    client = any_app.test_client()
    headers = tokens.bearer(tokens.token("alice"))
    for bad in ("101", "500", "0", "-1", "1e2", "x"):
        error = assert_json_error(client.get(f"/v1/notifications?limit={bad}", headers=headers), 400)
        assert error["field"] == "limit" and "100" in error["message"]
    assert client.get("/v1/notifications?limit=100", headers=headers).status_code == 200


def test_a_page_stops_at_its_byte_cap_and_next_before_continues_without_gaps(redis_app) -> None:
    client = redis_app.test_client()
    big = "x" * 30_000  # a page holds 64 KiB: two of these
    ids = [publish(client, {"user_id": "alice", "message": f"{i}{big}"}).get_json()["published"][0]["id"]
           for i in range(5)]
    headers = tokens.bearer(tokens.token("alice"))
    pages, cursor = [], ""
    for _ in range(5):
        response = client.get(f"/v1/notifications?limit=100{cursor}", headers=headers)
        assert response.status_code == 200 and len(response.get_data()) < 64 * 1024 + 1024
        body = response.get_json()
        pages.append([n["id"] for n in body["notifications"]])
        if body["next_before"] is None:
            break
        assert body["next_before"] == pages[-1][-1]
        cursor = f"&before={body['next_before']}"
    assert pages == [[ids[4], ids[3]], [ids[2], ids[1]], [ids[0]]]


def test_an_event_larger_than_the_byte_cap_still_comes_alone(redis_app) -> None:
    client = redis_app.test_client()
    huge = publish(client, {"user_id": "alice", "message": "y" * 65_000, "data": {"z": "z" * 30_000}})
    body = client.get("/v1/notifications", headers=tokens.bearer(tokens.token("alice"))).get_json()
    assert [n["id"] for n in body["notifications"]] == [huge.get_json()["published"][0]["id"]]


# --------------------------------------------------------------------------
# Finding 7: a bad cursor is a 400 naming it; only an outage is a 503
# --------------------------------------------------------------------------


@pytest.mark.parametrize("cursor", ["0-0", "x", "-1-0", "1-", "1-2-3", "1234567890123456-0", "0-00", " "])
def test_any_bad_cursor_is_a_400_naming_before(any_app, cursor) -> None:
    client = any_app.test_client()
    publish(client, {"user_id": "alice", "message": "x"})
    response = client.get("/v1/notifications", query_string={"before": cursor},
                          headers=tokens.bearer(tokens.token("alice")))
    error = assert_json_error(response, 400, "bad_request")
    assert error["field"] == "before"


def test_the_smallest_real_cursor_is_an_empty_last_page(any_app) -> None:
    client = any_app.test_client()
    body = client.get("/v1/notifications?before=0-1", headers=tokens.bearer(tokens.token("alice"))).get_json()
    assert body["notifications"] == [] and body["next_before"] is None


def test_a_redis_outage_is_the_only_503(prefix) -> None:
    server = RedisServer().start()
    app = started(create_app(make_config(redis_url=server.url, redis_prefix=prefix, redis_socket_timeout=0.5)))
    state = app.extensions["notifier"]
    try:
        client = app.test_client()
        server.stop()
        response = client.get("/v1/notifications?before=1-0", headers=tokens.bearer(tokens.token("alice")))
        assert_json_error(response, 503, "broker_unavailable")
        assert response.headers["Retry-After"]
    finally:
        state.stop()


# --------------------------------------------------------------------------
# Finding 2: streams per user and per worker
# --------------------------------------------------------------------------


def test_streams_are_capped_per_user_and_per_worker_with_json_refusals(any_app) -> None:
    any_app.extensions["notifier"].admission.per_user = 2
    any_app.extensions["notifier"].admission.per_worker = 3
    client = any_app.test_client()
    state = any_app.extensions["notifier"]

    def rejections(status: str) -> float:
        return counter(client, f'notifier_stream_rejections_total{{status="{status}"}}')

    rejected_before = rejections("429"), rejections("503")

    def stream(user: str) -> Any:
        return client.get("/v1/events", headers=tokens.bearer(tokens.token(user)), buffered=False)

    alice = [stream("alice"), stream("alice")]
    assert [r.status_code for r in alice] == [200, 200]
    refused = stream("alice")
    error = assert_json_error(refused, 429, "too_many_streams")
    assert "2 streams" in error["message"] and int(refused.headers["Retry-After"]) >= 1
    bob = stream("bob")
    assert bob.status_code == 200
    full = stream("carol")
    assert_json_error(full, 503, "worker_full")
    assert int(full.headers["Retry-After"]) >= 1
    assert len(state.hub) == 3, "refusals subscribe nothing"
    head = client.head("/v1/events", headers=tokens.bearer(tokens.token("alice")))
    assert head.status_code == 200, "HEAD opens no stream, so it is not counted"

    alice.pop().close()  # a stream that ends gives its place back
    pump_until(lambda: state.admission.open == 2)
    for _ in range(20):  # Redis: the release is sent by a background greenlet
        gevent.sleep(0.005)
    again = stream("alice")
    assert again.status_code == 200
    assert (rejections("429"), rejections("503")) == (rejected_before[0] + 1, rejected_before[1] + 1)
    for response in (*alice, bob, again):
        response.close()
    pump_until(lambda: state.admission.open == 0 and len(state.hub) == 0)
