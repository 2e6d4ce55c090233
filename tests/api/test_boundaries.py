"""Tests that pin the boundaries (issue 15): each fails on a small, realistic
bug that the rest of the suite lets through (a prefix match, an off-by-one, a
lost jitter, a forgotten channel, a heartbeat scheduled at the deadline, a
duplicate at the replay hand-over). Fast: the embedded broker or the
session's redis-server, no sleeps of seconds."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator

import gevent
import pytest

from notifier import create_app
from notifier.auth import pattern_allows
from notifier.channels import ChannelNames
from notifier.events import Delivery, format_event_id, parse_event_id
from notifier.hub import CloseReason, Subscription
from notifier.validation import Limits, validate_notification

from ..support import tokens
from ..support.config import make_config
from ..support.cores import make_core
from ..support.http import assert_json_error, open_stream, publish
from ..support.redis_proxy import RedisProxy
from ..support.sse import SSEParser

TS = "2026-01-01T00:00:00.000Z"


def pump_until(predicate, timeout: float = 5.0, message: str = "condition") -> None:
    """Let the broker's greenlet run (this process is not monkey-patched).

    ``gevent.sleep(0)``, not a timed sleep: unpatched, the broker's loop
    blocks up to 20 ms in each socket poll and yields with ``sleep(0)``, a
    callback; gevent runs 50 callbacks before it looks at its timers, so a
    timed sleep of ours came back only after about a second."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{message}: not met in {timeout} s")
        gevent.sleep(0)


# --------------------------------------------------------------------------
# 1. A topic grant without `*` is that name only, never a prefix
# --------------------------------------------------------------------------


@pytest.mark.parametrize("name, patterns, allowed", [
    ("orders:42", ["orders:42"], True),
    ("orders:420", ["orders:42"], False),
    ("orders:4", ["orders:42"], False),
    ("news", ["news"], True),
    ("newsletter", ["news"], False),
    ("orders:420", ["orders:42*"], True),
    ("orders:42", ["orders:*"], True),
    ("orders", ["orders:*"], False),
    ("anything", ["*"], True),
    ("orders:420", ["news", "orders:42", "billing:*"], False),
])
def test_a_grant_without_a_star_is_exactly_that_name(name, patterns, allowed) -> None:
    assert pattern_allows(name, patterns) is allowed


def test_a_user_granted_one_topic_cannot_open_a_longer_one(client, app) -> None:
    granted = tokens.bearer(tokens.token("alice", topics=["orders:42"]))
    refused, _ = open_stream(client, granted, "?topic=orders:420")
    assert_json_error(refused, 403, "forbidden")
    assert len(app.extensions["notifier"].hub) == 0
    response, chunks = open_stream(client, granted, "?topic=orders:42")
    assert response.status_code == 200 and next(chunks).startswith(b"retry: ")
    response.close()


def test_a_publisher_scoped_to_one_topic_cannot_publish_to_a_longer_one(client) -> None:
    scoped = tokens.publisher("shop", topics=["orders:1"])
    assert_json_error(publish(client, {"topic": "orders:10", "message": "not yours"}, scoped), 403, "forbidden")
    assert publish(client, {"topic": "orders:1", "message": "yours"}, scoped).status_code == 202


# --------------------------------------------------------------------------
# 2. A queue of N holds exactly N; the next event evicts
# --------------------------------------------------------------------------


def _delivery(n: int) -> Delivery:
    return Delivery((n, 0), f"id: {n}-0\ndata: x\n\n".encode())


def test_a_queue_of_three_holds_three_and_the_fourth_evicts() -> None:
    sub = Subscription("slow", ["bc"], 3)
    for n in (1, 2, 3):
        assert sub.offer(_delivery(n)) is True
    assert sub.closed is None and len(sub.queue) == 3
    assert sub.offer(_delivery(4)) is False, "the fourth event evicts"
    assert sub.closed == CloseReason.EVICTED


# --------------------------------------------------------------------------
# 3. The payload limit: exactly the limit in UTF-8 bytes passes, one more is 413
# --------------------------------------------------------------------------

LIMIT = 1024


def _utf8(text: str) -> int:
    return len(text.encode("utf-8"))


def _data_size(data: dict) -> int:
    """How events.py measures ``data``: its compact JSON (no spaces, non-ASCII
    kept as is), in UTF-8 bytes."""
    return _utf8(json.dumps(data, ensure_ascii=False, separators=(",", ":")))


@pytest.fixture
def small_limit_client() -> Iterator:
    app = create_app(make_config(max_payload_bytes=LIMIT))
    yield app.test_client()
    app.extensions["notifier"].stop()


# Multi-byte characters, so a size counted in characters (not bytes) fails too.
MESSAGES = [
    ("€" * 341 + "a", "€" * 341 + "é"),  # 3-byte chars; one more byte is a 2-byte char across the line
    ("😀" * 256, "😀" * 256 + "a"),  # 4-byte chars
    ("é" * 511 + "ab", "é" * 512 + "a"),  # 2-byte chars
]


@pytest.mark.parametrize("at_limit, over_limit", MESSAGES)
def test_a_message_of_exactly_the_limit_passes_and_one_byte_more_is_413(small_limit_client, at_limit, over_limit) -> None:
    assert (_utf8(at_limit), _utf8(over_limit)) == (LIMIT, LIMIT + 1)
    assert len(over_limit) < LIMIT, "fewer characters than bytes"
    ok = publish(small_limit_client, {"user_id": "alice", "message": at_limit})
    assert ok.status_code == 202, ok.get_data(as_text=True)
    error = assert_json_error(publish(small_limit_client, {"user_id": "alice", "message": over_limit}), 413,
                              "payload_too_large")
    assert error["field"] == "message"


@pytest.mark.parametrize("at_limit, over_limit", MESSAGES)
def test_data_of_exactly_the_limit_passes_and_one_byte_more_is_413(small_limit_client, at_limit, over_limit) -> None:
    # {"note":"..."} adds 11 bytes around the text.
    overhead = _data_size({"note": ""})
    fits = {"note": _trim(at_limit, LIMIT - overhead)}
    too_big = {"note": _trim(over_limit, LIMIT - overhead + 1)}
    assert (_data_size(fits), _data_size(too_big)) == (LIMIT, LIMIT + 1)
    ok = publish(small_limit_client, {"user_id": "alice", "message": "m", "data": fits})
    assert ok.status_code == 202, ok.get_data(as_text=True)
    error = assert_json_error(publish(small_limit_client, {"user_id": "alice", "message": "m", "data": too_big}), 413,
                              "payload_too_large")
    assert error["field"] == "data"


def _trim(text: str, size: int) -> str:
    """``text`` cut down to exactly ``size`` UTF-8 bytes: whole characters from
    the front, then ASCII padding for the bytes a multi-byte one would overshoot."""
    out = ""
    for char in text:
        if _utf8(out + char) > size:
            break
        out += char
    return out + "x" * (size - _utf8(out))


# --------------------------------------------------------------------------
# 4. The drain spreads the farewell retry: over 0.5x..1.5x
# --------------------------------------------------------------------------


def test_the_drain_gives_each_stream_a_jittered_retry_within_the_documented_spread() -> None:
    app = create_app(make_config(retry_ms=1000))
    state = app.extensions["notifier"]
    client = app.test_client()
    try:
        streams = []
        for i in range(30):
            response, chunks = open_stream(client, tokens.bearer(tokens.token(f"user{i}")))
            assert next(chunks).startswith(b"retry: 1000\n\n")
            streams.append(chunks)
        state.drain(window=0)
        assert state.wait_drained(5)
        farewells = []
        for chunks in streams:
            tail = b"".join(chunks)  # the farewell, then the stream ends
            match = re.fullmatch(rb"retry: (\d+)\n\n", tail)
            assert match, tail
            farewells.append(int(match.group(1)))
        assert all(500 <= value <= 1500 for value in farewells), sorted(farewells)
        assert len(set(farewells)) > 5, f"no spread: {sorted(farewells)}"
    finally:
        state.metrics.draining.set(0)
        state.stop()


# --------------------------------------------------------------------------
# 5. After a reconnect, the user's channel is subscribed again, live
# --------------------------------------------------------------------------


def test_after_a_reconnect_the_users_channel_is_resubscribed_and_delivers_live(redis_server, prefix) -> None:
    proxy = RedisProxy(redis_server.port)
    names = ChannelNames(prefix)
    broker = make_core(proxy.url, prefix, redis_socket_timeout=2, probe_interval_seconds=0.2, probe_timeout_seconds=0.5)
    direct = redis_server.client()  # not through the proxy

    def numsub(channel: str) -> int:
        return dict(direct.pubsub_numsub(channel))[channel.encode()]

    channel = names.user("alice")
    try:
        alice = Subscription("alice", names.for_subscriber("alice", []), 100)
        broker.subscribe(alice)
        assert numsub(channel) == 1
        before = broker.health().reconnects
        assert proxy.sever_pubsub() == 1  # Redis drops the subscriber; the client's side stays open, silent
        pump_until(lambda: broker.health().reconnects > before and broker.health().ok, message="reconnected")
        assert numsub(channel) == 1, "the user's channel is subscribed again, not only broadcast and the probe"
        assert numsub(names.broadcast) == 1

        # A new event arrives live: no session starts (so no catch-up from
        # history) while it travels.
        reconnects = broker.health().reconnects
        [sent] = broker.publish(validate_notification({"user_id": "alice", "message": "live"}, Limits(), TS))
        got: list[Delivery] = []
        pump_until(lambda: bool(got.extend(alice.take()) or got), timeout=2, message="the live event")
        assert [format_event_id(d.id) for d in got] == [sent.id]
        assert broker.health().reconnects == reconnects, "delivered by pub/sub, not by a catch-up after another reconnect"
    finally:
        broker.stop()
        proxy.close()
        direct.close()


# --------------------------------------------------------------------------
# 6. Heartbeats keep coming after the first one
# --------------------------------------------------------------------------


def test_a_silent_stream_gets_a_heartbeat_every_interval_not_one_then_the_deadline() -> None:
    # The deadline (1.275-1.5 s, jittered) is well after two heartbeats (0.2 s each).
    app = create_app(make_config(heartbeat_seconds=0.2, max_stream_seconds=1.5))
    try:
        response, chunks = open_stream(app.test_client(), tokens.bearer(tokens.token("alice")))
        next(chunks)
        started = time.monotonic()
        heartbeats = []
        for chunk in chunks:
            assert chunk == b":\n\n"
            heartbeats.append(time.monotonic() - started)
            if len(heartbeats) == 2:
                break
        assert len(heartbeats) == 2, "the stream ended after one heartbeat"
        assert heartbeats[1] < 0.7, f"two heartbeats took {heartbeats[1]:.2f} s (about 2 x 0.2 s expected)"
        response.close()
    finally:
        app.extensions["notifier"].stop()


# --------------------------------------------------------------------------
# 7. The replay-to-live hand-over delivers an in-between event exactly once
# --------------------------------------------------------------------------


@pytest.fixture(params=["memory", "redis"])
def any_app(request, prefix) -> Iterator:
    overrides: dict[str, object] = {}
    if request.param == "redis":
        overrides = dict(redis_url=request.getfixturevalue("redis_server").url, redis_prefix=prefix)
    app = create_app(make_config(**overrides))
    state = app.extensions["notifier"]
    if request.param == "redis":
        app.test_client().get("/livez")  # the first request starts the subscriber in this process
        pump_until(lambda: state.core.health().ok, message="broker ready")
    yield app
    state.stop()


def test_an_event_published_between_attach_and_history_read_is_delivered_once(any_app, monkeypatch) -> None:
    client = any_app.test_client()
    state = any_app.extensions["notifier"]
    resume_from, first = [publish(client, {"user_id": "alice", "message": m}).get_json()["published"][0]["id"]
                          for m in ("seen", "missed")]
    original_replay = state.core.history.replay
    in_between: list[str] = []

    def publish_then_replay(channels, after):
        """Our seam: the stream is attached, its history not read yet."""
        [sent] = state.core.publish(validate_notification({"user_id": "alice", "message": "in between"},
                                                            Limits(), TS))
        in_between.append(sent.id)
        sent_id = parse_event_id(sent.id)
        # The live copy is queued (Redis: once the subscriber greenlet has it)
        # before the history is read, which then holds the event too.
        pump_until(lambda: any(d.id == sent_id for sub in state.hub.subscriptions() for d in sub.queue),
                   message="the live copy queued")
        return original_replay(channels, after)

    monkeypatch.setattr(state.core.history, "replay", publish_then_replay)
    # The replay after `resume_from` has `first` and the in-between event.
    response, chunks = open_stream(client, {**tokens.bearer(tokens.token("alice")), "Last-Event-ID": resume_from})
    assert response.status_code == 200 and len(in_between) == 1
    parser = SSEParser()
    received = parser.feed(next(chunks).decode())
    assert [(e.event, e.id) for e in received] == [("notification", first), ("notification", in_between[0])], \
        "both replayed with the first chunk (no reset)"
    last = publish(client, {"user_id": "alice", "message": "after"}).get_json()["published"][0]["id"]
    deadline = time.monotonic() + 5
    while last not in [e.id for e in received]:
        assert time.monotonic() < deadline, "the live event never came"
        received += parser.feed(next(chunks).decode())
    response.close()
    assert [e.id for e in received] == [first, in_between[0], last], "each exactly once, in order"


