"""The envelope: the one JSON object an event is stored, published and
streamed as, and the publish API's reply about it. The only module that
spells either.

    {"id":"<ms>-<seq>",<target>,"type":...,"message":...,"data":{...},"timestamp":"..."}

where ``<target>`` is ``"user_id":"..."``, ``"topic":"..."`` or
``"broadcast":true``. It is built in two halves because the id is assigned
where the event is stored (the Lua script in Redis, the memory broker's
counter): ``body_without_id`` here, then the id spliced in front by
``splice_id`` or, inside Redis, by ``LUA_SPLICE`` (the same concatenation in
Lua). ``decode`` reads it back, taking id and type from the fixed head the
two splicers write. One golden-bytes test holds all of them to the same bytes
(tests/unit/test_envelope.py).

Concatenated rather than one ``json.dumps`` of a dict: the same bytes (the
same C string encoder, the same key order) without encoding ``data`` again.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence

from .events import DEFAULT_TYPE, Delivery, EventId, Notification, Published, encode, parse_event_id
from .runtime.jsonenc import ascii_json_string, json_string

# ensure_ascii=False keeps non-Latin text compact; JSON escapes CR/LF inside
# strings, so the result is always a single line (U+2028 may stay raw: SSE only
# splits lines on CR and LF). allow_nan=False: NaN/Infinity are not JSON and
# break every JSON.parse. One encoder for the process: json.dumps with options
# builds a new one per call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
dumps = _ENCODER.encode
json_str = json_string  # a str as a JSON string, byte for byte what dumps gives for it


def _target_field(kind: str, name: str, as_str: Callable[[str], str] = json_str) -> str:
    if kind == "user":
        return '"user_id":' + as_str(name)
    if kind == "topic":
        return '"topic":' + as_str(name)
    return '"broadcast":true'


def encoded_data(notification: Notification) -> str:
    return notification.data_json or dumps(dict(notification.data))


def body_without_id(notification: Notification) -> str:
    """The envelope minus its leading ``{"id":"...",``."""
    target = notification.target
    return (_target_field(target.kind, target.name) + ',"type":' + json_str(notification.type)
            + ',"message":' + json_str(notification.message) + ',"data":' + encoded_data(notification)
            + ',"timestamp":' + json_str(notification.timestamp) + "}")


def splice_id(event_id: str, body: str) -> str:
    """The whole envelope. ``event_id`` is ``<digits>-<digits>``: nothing to escape."""
    return '{"id":"' + event_id + '",' + body


# The same splice, inside the publish script: a Lua expression of the locals
# ``id`` and ``body``.
LUA_SPLICE = """'{"id":"' .. id .. '",' .. body"""


# The head as the splicers write it: id, one target field (a JSON string may
# hold escaped quotes, never a bare one), then type, which validation limits to
# characters JSON never escapes.
_HEAD = re.compile(
    r'\{"id":"((\d{1,15})-(\d{1,15}))",(?:"user_id":"(?:[^"\\]|\\.)*"|"topic":"[^"\\]*"|"broadcast":true),'
    r'"type":"([A-Za-z0-9:._/\-]{1,64})",')


def decode(payload: str) -> Delivery:
    """The shared SSE frame of one envelope. Raises ValueError (or KeyError /
    TypeError) when it is not one.

    Precondition: ``payload`` came from ``splice_id`` / ``LUA_SPLICE`` over a
    validated Notification, so ``id`` and ``type`` are safe in SSE fields.
    Every delivery of every worker passes here, so the common case reads the
    fixed head instead of parsing the JSON.
    """
    head = _HEAD.match(payload)
    event_id: EventId | None
    if head is not None:
        id_text, type_ = head.group(1), head.group(4)
        event_id = (int(head.group(2)), int(head.group(3)))
    else:
        parsed = json.loads(payload)
        id_text = parsed["id"]
        event_id = parse_event_id(id_text)
        type_ = parsed.get("type") or DEFAULT_TYPE
    if event_id is None:
        raise ValueError(f"bad event id in payload: {id_text!r}")
    return Delivery(event_id, encode(payload, event_id=id_text, event=type_), type_, payload)


def reply_body(published: Sequence[Published]) -> bytes:
    """The publish API's 202 body, ``{"published": [{"id", <target>, "type",
    "receivers"}...], "count"}``, in ASCII as Flask's jsonify would write it.
    Concatenated: a batch reply has up to 1,000 items."""
    items = []
    for item in published:
        target = item.notification.target
        items.append('{"id":' + ascii_json_string(item.id) + ","
                     + _target_field(target.kind, target.name, ascii_json_string)
                     + ',"type":' + ascii_json_string(item.notification.type)
                     + ',"receivers":' + str(int(item.receivers)) + "}")
    return ('{"published":[' + ",".join(items) + '],"count":' + str(len(items)) + "}\n").encode("ascii")
