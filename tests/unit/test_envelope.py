"""The envelope is spelled in one module, but built in two languages: the
Python splicer (memory broker) and the Lua one (Redis publish script). One
golden test holds both, and the decoder, to the same bytes as json.dumps."""

from __future__ import annotations

import json

import pytest

from notifier.broker.redis_history import RedisHistory
from notifier.broker.redis_store import RedisStore, make_client
from notifier.channels import ChannelNames
from notifier.envelope import body_without_id, decode, reply_body, splice_id
from notifier.events import Published
from notifier.validation import Limits, validate_notification

TS = "2026-01-01T00:00:00.000Z"

CASES = [
    {"user_id": "alice", "type": "order.shipped", "message": "Shipped!\n", "data": {"order": 42}},
    {"user_id": 'we"ird\\ id \u00e9\u2028', "message": "\u4f60\u597d \U0001f600", "data": {"k": [1, 2.5, None, True]}},
    {"topic": "orders:42", "message": "", "data": {}},
    {"broadcast": True, "type": "maintenance", "message": "at noon", "data": {"nested": {"a": "\r\n\t"}}},
]


def expected_bytes(event_id: str, item: dict) -> str:
    """What one json.dumps of the documented field order gives."""
    target = {k: item[k] for k in ("user_id", "topic", "broadcast") if k in item}
    body = {"id": event_id, **target, "type": item.get("type", "notification"), "message": item["message"],
            "data": item.get("data", {}), "timestamp": TS}
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


@pytest.mark.parametrize("item", CASES)
def test_python_lua_and_json_dumps_spell_the_same_envelope(item: dict, redis_server, prefix: str) -> None:
    [notification] = validate_notification(item, Limits(), TS)
    names = ChannelNames(prefix)
    store = RedisStore(make_client(redis_server.url), names)
    try:
        [published] = store.publish([notification])
        stored = RedisHistory(store.client, names).recent([names.for_target(notification.target)], None, 1)[0].payload
    finally:
        store.close()
    python = splice_id(published.id, body_without_id(notification))
    assert stored == python == expected_bytes(published.id, item), "Lua, Python and json.dumps agree byte for byte"
    delivery = decode(stored)
    assert delivery.payload == stored and delivery.type == item.get("type", "notification")
    assert delivery.frame.startswith(f"id: {published.id}\nevent: {delivery.type}\ndata: ".encode())
    assert json.loads(stored)["id"] == published.id


def test_decode_reads_a_reordered_envelope_the_slow_way() -> None:
    fast = decode(expected_bytes("17-3", CASES[0]))
    reordered = json.dumps({"type": "order.shipped", "id": "17-3", "user_id": "alice", "message": "m"})
    slow = decode(reordered)
    assert (fast.id, fast.type) == (slow.id, slow.type) == ((17, 3), "order.shipped")


def test_the_publish_reply_is_json_dumps_in_ascii() -> None:
    notes = [n for item in CASES for n in validate_notification(item, Limits(), TS)]
    published = [Published(f"{i}-0", n, i) for i, n in enumerate(notes)]
    expected = {"published": [{"id": p.id, **({"user_id": p.notification.target.name} if p.notification.target.kind == "user"
                                              else {"topic": p.notification.target.name} if p.notification.target.kind == "topic"
                                              else {"broadcast": True}),
                               "type": p.notification.type, "receivers": p.receivers} for p in published],
                "count": len(published)}
    assert reply_body(published) == (json.dumps(expected, separators=(",", ":")) + "\n").encode("ascii")
