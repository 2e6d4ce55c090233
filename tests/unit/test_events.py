"""The wire format and publish validation, table-tested."""

from __future__ import annotations

import json

import pytest

from notifier.envelope import body_without_id, splice_id
from notifier.envelope import decode as delivery_from_payload
from notifier.errors import InvalidEvent, PayloadTooLarge, UnsupportedMedia
from notifier.events import Target, comment, encode, format_event_id, parse_event_id, utc_timestamp
from notifier.validation import Limits, parse_publish_body, validate_notification

from ..support.sse import SSEParser

TS = "2026-01-01T00:00:00.000Z"


@pytest.mark.parametrize(
    "data, expected",
    [
        ("hello", b"data: hello\n\n"),
        ("", b"data: \n\n"),
        ("a\nb", b"data: a\ndata: b\n\n"),
        ("a\r\nb", b"data: a\ndata: b\n\n"),
        ("a\rb", b"data: a\ndata: b\n\n"),
        ("a\n\nb", b"data: a\ndata: \ndata: b\n\n"),
        ("trailing\n", b"data: trailing\ndata: \n\n"),
        # U+2028/U+2029/U+0085 are not SSE line ends: str.splitlines would split them.
        ("x\u2028y\u2029z\x85w", "data: x\u2028y\u2029z\x85w\n\n".encode()),
        ("id: 1\nevent: forged", b"data: id: 1\ndata: event: forged\n\n"),
        ("caf\u00e9 \U0001F600", "data: caf\u00e9 \U0001F600\n\n".encode()),
    ],
)
def test_encode_data_framing(data: str, expected: bytes) -> None:
    assert encode(data) == expected


@pytest.mark.parametrize("data", ["a\nb", "a\r\nb\rc", "", "x\u2028y", "\n\n", "line\r", "emoji \U0001F680"])
def test_encode_round_trips_through_a_spec_parser(data: str) -> None:
    events = SSEParser().feed(encode(data, event_id="1-0", event="notification").decode())
    assert len(events) == 1
    normalised = data.replace("\r\n", "\n").replace("\r", "\n")
    assert events[0].data == normalised
    assert events[0].id == "1-0" and events[0].event == "notification"


@pytest.mark.parametrize("field", ["event_id", "event"])
@pytest.mark.parametrize("value", ["a\nb", "a\rb", "a\x00b", "x\r\nid: 9"])
def test_encode_refuses_control_characters_in_fields(field: str, value: str) -> None:
    with pytest.raises(ValueError):
        encode("data", **{field: value})


def test_comment_and_retry_are_single_frames() -> None:
    assert comment("hi") == b": hi\n\n"
    assert comment("a\nb") == b": a b\n\n"
    assert comment() == b":\n\n"
    parser = SSEParser()
    assert parser.feed(comment("x\r\ny").decode()) == []


@pytest.mark.parametrize("text, parsed", [
    ("1700000000000-0", (1700000000000, 0)),
    (" 12-3 ", (12, 3)),
    ("", None), (None, None), ("abc", None), ("1-", None), ("-1", None), ("1-2-3", None), ("1.5-0", None),
    ("9" * 16 + "-0", None),
])
def test_parse_event_id(text, parsed) -> None:
    assert parse_event_id(text) == parsed
    if parsed:
        assert parse_event_id(format_event_id(parsed)) == parsed


def test_payload_is_one_json_object_with_every_field() -> None:
    [notification] = validate_notification(
        {"user_id": "alice", "type": "order.shipped", "message": "Shipped!\nline2\u2028", "data": {"n": 1}}, Limits(), TS)
    payload = splice_id("5-1", body_without_id(notification))
    assert json.loads(payload) == {"id": "5-1", "user_id": "alice", "type": "order.shipped",
                                   "message": "Shipped!\nline2\u2028", "data": {"n": 1}, "timestamp": TS}
    delivery = delivery_from_payload(payload)
    assert delivery.id == (5, 1)
    frame = delivery.frame.decode()
    assert frame.startswith("id: 5-1\nevent: order.shipped\ndata: {")
    assert frame.count("\ndata: ") == 1, "JSON keeps the payload on one data line"
    [event] = SSEParser().feed(frame)
    assert event.json()["message"] == "Shipped!\nline2\u2028"


# Targets whose JSON needs escapes: quotes, backslashes (a trailing one next to
# the closing quote), non-ASCII, and text that looks like the next key.
TRICKY_TARGETS = [Target("user", 'a"b\\'), Target("user", "x\\"), Target("user", '\u00e9,"type":"forged"'),
                  Target("topic", "orders:1"), Target("broadcast")]


@pytest.mark.parametrize("target", TRICKY_TARGETS, ids=repr)
def test_payload_bytes_equal_one_json_dumps_of_the_fields(target: Target) -> None:
    """body_without_id is concatenated for speed: it must be byte for byte what
    encoding the fields as one JSON object gives (what readers and the Lua
    script rely on)."""
    fields = {"message": 'say "hi"\n\u2028\u00e9', "data": {"nested": [1, 2.5, None, {"k": "\t"}], "e": "\U0001F600"}}
    [notification] = validate_notification({**_target_field(target), "type": "a.b", **fields}, Limits(), TS)
    expected = json.dumps({**_target_field(target), "type": "a.b", **fields, "timestamp": TS},
                          ensure_ascii=False, separators=(",", ":"))
    assert "{" + body_without_id(notification) == expected
    payload = splice_id("17-3", body_without_id(notification))
    fast = delivery_from_payload(payload)
    assert (fast.id, fast.type, fast.payload) == ((17, 3), "a.b", payload)
    # The same event built from a payload the fast reader cannot match (key order changed) is identical.
    reordered = json.dumps({"type": "a.b", **json.loads(payload)}, ensure_ascii=False, separators=(",", ":"))
    slow = delivery_from_payload(reordered)
    assert (slow.id, slow.type) == (fast.id, fast.type)
    assert SSEParser().feed(slow.frame.decode())[0].json() == SSEParser().feed(fast.frame.decode())[0].json()


def _target_field(target: Target) -> dict[str, object]:
    if target.kind == "broadcast":
        return {"broadcast": True}
    return {"user_id" if target.kind == "user" else "topic": target.name}


@pytest.mark.parametrize("raw, field", [
    (b'{"user_id": "a", "message": "\\ud800"}', "message"),
    (b'{"user_id": "a", "message": "x", "data": {"k": "\\udc00"}}', "data"),
    (b'{"user_id": "\\ud83d", "message": "x"}', "user_id"),
    (b'{"user_ids": ["ok", "\\ud83d"], "message": "x"}', "user_ids"),
])
def test_lone_surrogate_escapes_are_refused_by_field(raw: bytes, field: str) -> None:
    """JSON can spell a lone surrogate; UTF-8 cannot carry one. It used to
    fail later, in the broker, as a 500."""
    with pytest.raises(InvalidEvent) as caught:
        parse_publish_body(raw, "application/json", Limits(), TS)
    assert caught.value.status == 422 and caught.value.field == field
    assert "surrogate" in caught.value.message
    # A surrogate pair is a real character and is fine.
    assert parse_publish_body(b'{"user_id": "a", "message": "\\ud83d\\ude00"}', "application/json", Limits(), TS)


def test_timestamp_is_rfc3339_utc() -> None:
    stamp = utc_timestamp()
    assert stamp.endswith("Z") and "T" in stamp and len(stamp) == 24


def _parse(body: object, content_type: str = "application/json", limits: Limits | None = None):
    return parse_publish_body(json.dumps(body).encode(), content_type, limits or Limits(), TS)


@pytest.mark.parametrize("body, field", [
    ({"message": "x"}, "target"),
    ({"user_id": "a", "topic": "t", "message": "x"}, "target"),
    ({"user_id": "", "message": "x"}, "user_id"),
    ({"user_id": 5, "message": "x"}, "user_id"),
    ({"user_id": "a\nb", "message": "x"}, "user_id"),
    ({"user_id": "a\x00", "message": "x"}, "user_id"),
    ({"user_ids": [], "message": "x"}, "user_ids"),
    ({"user_ids": "alice", "message": "x"}, "user_ids"),
    ({"user_ids": ["ok", "bad\r"], "message": "x"}, "user_ids"),
    ({"topic": "orders\nx", "message": "x"}, "topic"),
    ({"topic": "has space", "message": "x"}, "topic"),
    ({"broadcast": False, "message": "x"}, "broadcast"),
    ({"broadcast": "yes", "message": "x"}, "broadcast"),
    ({"user_id": "a"}, "message"),
    ({"user_id": "a", "message": 3}, "message"),
    ({"user_id": "a", "message": "x", "type": "a\nb"}, "type"),
    ({"user_id": "a", "message": "x", "type": "a\rid: 1"}, "type"),
    ({"user_id": "a", "message": "x", "type": ""}, "type"),
    ({"user_id": "a", "message": "x", "type": 7}, "type"),
    ({"user_id": "a", "message": "x", "data": [1]}, "data"),
    ({"user_id": "a", "message": "x", "data": "s"}, "data"),
    ({"user_id": "a", "message": "x", "extra": 1}, "extra"),
    ("just a string", "body"),
    ([], "body"),
    ([{"user_id": "a", "message": "x"}, {"message": "no target"}], "target"),
])
def test_invalid_publish_bodies_name_the_field(body, field) -> None:
    with pytest.raises(InvalidEvent) as caught:
        _parse(body)
    assert caught.value.status == 422
    assert caught.value.field == field


def test_not_json_is_400_and_wrong_media_type_is_415() -> None:
    with pytest.raises(InvalidEvent) as caught:
        parse_publish_body(b"{not json", "application/json", Limits(), TS)
    assert caught.value.status == 400
    for content_type in (None, "text/plain", "application/x-www-form-urlencoded"):
        with pytest.raises(UnsupportedMedia):
            parse_publish_body(b"{}", content_type, Limits(), TS)
    assert _parse({"broadcast": True, "message": "x"}, "application/json; charset=utf-8")


@pytest.mark.parametrize("field, body", [
    ("message", {"user_id": "a", "message": "x" * 2000}),
    ("data", {"user_id": "a", "message": "x", "data": {"blob": "y" * 2000}}),
])
def test_oversized_message_or_data_is_413(field, body) -> None:
    with pytest.raises(PayloadTooLarge) as caught:
        _parse(body, limits=Limits(max_payload_bytes=1024))
    assert caught.value.status == 413 and caught.value.field == field


def test_batch_limit_and_expansion() -> None:
    limits = Limits(max_batch=2)
    with pytest.raises(InvalidEvent):
        _parse([{"broadcast": True, "message": "x"}] * 3, limits=limits)
    out = _parse([{"user_ids": ["a", "b", "a"], "message": "x"}, {"topic": "orders:1", "message": "y"}])
    assert [(n.target.kind, n.target.name) for n in out] == [("user", "a"), ("user", "b"), ("topic", "orders:1")]
    assert all(n.type == "notification" for n in out)


def test_the_publish_timestamp_is_the_current_time_in_rfc_3339_utc_milliseconds() -> None:
    """The second's text is reused within the second: still the clock's time, to the millisecond."""
    import re
    import time as clock
    from datetime import datetime, timezone

    from notifier.events import utc_timestamp

    for _ in range(3):
        before = datetime.now(timezone.utc).replace(microsecond=0).timestamp()
        stamp = utc_timestamp()
        after = clock.time()
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", stamp)
        parsed = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()
        assert before <= parsed <= after
        clock.sleep(0.4)  # across a second boundary too


def test_a_cluster_no_node_of_which_answers_is_an_outage_not_a_bug() -> None:
    """redis-py raises RedisClusterException (not a RedisError) when it cannot
    reach any node: a 503 for the client, like any other outage."""
    import pytest
    from redis.exceptions import RedisClusterException

    from notifier.broker.redis_history import outage_is_unavailable
    from notifier.errors import BrokerUnavailable

    with pytest.raises(BrokerUnavailable), outage_is_unavailable():
        raise RedisClusterException("Redis Cluster cannot be connected")
