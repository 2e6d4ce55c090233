"""Notifications as values, their validation, and the SSE wire format.

Pure: no flask, redis or gevent imports, so every rule here is table-tested.

Event ids
---------
Every event gets an id ``"<ms>-<seq>"`` from one generator shared by all
channels (a Lua script in Redis, a counter in the memory broker). Ids are
therefore unique and totally ordered across channels, which is what lets one
``Last-Event-ID`` resume a connection that listens on several channels
(private + broadcast + topics): "everything after X" means the same thing on
each of them. The format is also a valid Redis Stream id, so the id *is* the
history position.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from json.encoder import encode_basestring  # the C string encoder json.dumps uses
from typing import Any

from .errors import InvalidEvent, PayloadTooLarge, UnsupportedMedia

DEFAULT_TYPE = "notification"

# Characters that must never reach an SSE field line: CR and LF end a field
# (a publisher could forge a second event), NUL is rejected by browsers, and
# the other C0/C1 controls have no business in an identifier.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# Topic names end up in Redis channel names and in tokens' grant patterns.
# Used with fullmatch: "$" would also accept a trailing newline.
_TOPIC = re.compile(r"[A-Za-z0-9][A-Za-z0-9:._/@\-]{0,199}")
_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9:._/\-]{0,63}")
_EVENT_ID = re.compile(r"^(\d{1,15})-(\d{1,15})$")
MAX_USER_ID_LENGTH = 256

EventId = tuple[int, int]
ZERO_ID: EventId = (0, 0)


def parse_event_id(text: str | None) -> EventId | None:
    """``"1700000000000-3"`` -> ``(1700000000000, 3)``; None when malformed."""
    if not text:
        return None
    match = _EVENT_ID.match(text.strip())
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2))


def format_event_id(event_id: EventId) -> str:
    return f"{event_id[0]}-{event_id[1]}"


def utc_timestamp(now: datetime | None = None) -> str:
    """RFC 3339 in UTC with millisecond precision: ``2026-11-29T15:40:00.123Z``."""
    now = now or datetime.now(timezone.utc)
    return now.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# ensure_ascii=False keeps non-Latin text compact; JSON escapes CR/LF inside
# strings, so the result is always a single line (U+2028 may stay raw: SSE only
# splits lines on CR and LF). allow_nan=False: NaN/Infinity are not JSON and
# break every JSON.parse. One encoder for the process: json.dumps with options
# builds a new one per call, which showed in the batch-publish profile.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
_dumps = _ENCODER.encode
# A str as a JSON string, byte for byte what _dumps gives for it.
_json_str = encode_basestring


# --------------------------------------------------------------------------
# Targets and notifications
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """Who a notification is for: one user, one topic, or everybody."""

    kind: str  # "user" | "topic" | "broadcast"
    name: str = ""

    def channel_suffix(self) -> str:
        if self.kind == "broadcast":
            return "broadcast"
        return f"{self.kind}:{self.name}"


BROADCAST = Target("broadcast")


@dataclass(frozen=True)
class Notification:
    """A validated notification before it has an id.

    ``body_without_id`` is the JSON object of the SSE ``data:`` line minus its
    leading ``{"id":...,``; the broker splices the id in when it assigns one,
    so JSON is encoded once per publish, never per subscriber.

    ``data_json`` is ``data`` already encoded (validation measures it, so it
    is encoded once per publish object, however many recipients it expands
    to); empty means "encode ``data`` when needed".
    """

    target: Target
    type: str
    message: str
    data: Mapping[str, Any] = field(default_factory=dict)
    timestamp: str = ""
    data_json: str = field(default="", compare=False, repr=False)

    def encoded_data(self) -> str:
        return self.data_json or _dumps(dict(self.data))

    def body_without_id(self) -> str:
        # Concatenated rather than one json.dumps of a dict: same bytes (the
        # same C string encoder, same key order), and `data` is not re-encoded.
        if self.target.kind == "user":
            head = '"user_id":' + _json_str(self.target.name)
        elif self.target.kind == "topic":
            head = '"topic":' + _json_str(self.target.name)
        else:
            head = '"broadcast":true'
        return (head + ',"type":' + _json_str(self.type) + ',"message":' + _json_str(self.message)
                + ',"data":' + self.encoded_data() + ',"timestamp":' + _json_str(self.timestamp) + "}")


def splice_id(event_id: str, body_without_id: str) -> str:
    """The full JSON payload; mirrors what the Redis Lua script does."""
    return '{"id":' + _dumps(event_id) + "," + body_without_id


# --------------------------------------------------------------------------
# Validation of publish requests (the edge: everything inside trusts this)
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    max_payload_bytes: int = 64 * 1024
    max_batch: int = 100
    max_recipients: int = 1000

    @property
    def max_body_bytes(self) -> int:
        """A whole request body: a full batch of full-size fields, JSON-escaped, plus the envelope."""
        return self.max_payload_bytes * max(1, self.max_batch) * 2 + 4096


_TARGET_FIELDS = ("user_id", "user_ids", "topic", "broadcast")
_ALLOWED_FIELDS = frozenset((*_TARGET_FIELDS, "type", "message", "data"))


def _utf8_size(text: str, field_name: str, where: str = "") -> int:
    """Bytes of ``text`` as UTF-8. JSON may spell a lone surrogate (``"\\ud800"``),
    which no UTF-8 payload can carry: refuse it here, not in the broker."""
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidEvent(f"{where}{field_name} must be valid Unicode (no lone surrogate escapes)", field=field_name) from None


def validate_user_id(value: Any, field_name: str = "user_id") -> str:
    if not isinstance(value, str) or not value:
        raise InvalidEvent(f"{field_name} must be a non-empty string", field=field_name)
    if len(value) > MAX_USER_ID_LENGTH:
        raise InvalidEvent(f"{field_name} is longer than {MAX_USER_ID_LENGTH} characters", field=field_name)
    if _CONTROL.search(value):
        raise InvalidEvent(f"{field_name} must not contain control characters (CR, LF, NUL...)", field=field_name)
    if not value.isascii():
        _utf8_size(value, field_name)
    return value


def validate_topic(value: Any, field_name: str = "topic") -> str:
    if not isinstance(value, str) or not value:
        raise InvalidEvent(f"{field_name} must be a non-empty string", field=field_name)
    if _CONTROL.search(value):
        raise InvalidEvent(f"{field_name} must not contain control characters (CR, LF, NUL...)", field=field_name)
    if not _TOPIC.fullmatch(value):
        raise InvalidEvent(
            f"{field_name} must be 1-200 characters of letters, digits and : . _ / @ - (starting with a letter or digit)",
            field=field_name,
        )
    return value


def _validate_type(value: Any) -> str:
    if value is None:
        return DEFAULT_TYPE
    if isinstance(value, str) and _TYPE.fullmatch(value):
        return value  # the common case; what follows explains a refusal
    if not isinstance(value, str) or not value:
        raise InvalidEvent("type must be a non-empty string", field="type")
    if _CONTROL.search(value):
        raise InvalidEvent("type must not contain control characters (CR, LF, NUL...)", field="type")
    if not _TYPE.fullmatch(value):
        raise InvalidEvent("type must be 1-64 characters of letters, digits and : . _ / -", field="type")
    return value


def _targets(item: Mapping[str, Any], limits: Limits, where: str) -> list[Target]:
    given = [name for name in _TARGET_FIELDS if name in item]
    if not given:
        raise InvalidEvent(f"{where}no target: give one of user_id, user_ids, topic or broadcast", field="target")
    if len(given) > 1:
        raise InvalidEvent(f"{where}give exactly one target, not {', '.join(given)}", field="target")
    name = given[0]
    value = item[name]
    if name == "user_id":
        return [Target("user", validate_user_id(value))]
    if name == "topic":
        return [Target("topic", validate_topic(value))]
    if name == "broadcast":
        if value is not True:
            raise InvalidEvent(f"{where}broadcast must be true", field="broadcast")
        return [BROADCAST]
    if not isinstance(value, list) or not value:
        raise InvalidEvent(f"{where}user_ids must be a non-empty array of strings", field="user_ids")
    if len(value) > limits.max_recipients:
        raise InvalidEvent(f"{where}user_ids has more than {limits.max_recipients} entries", field="user_ids")
    users = [validate_user_id(user, "user_ids") for user in value]
    return [Target("user", user) for user in dict.fromkeys(users)]  # de-duplicated, order kept


def validate_notification(item: Any, limits: Limits, timestamp: str, where: str = "") -> list[Notification]:
    """One publish object -> one Notification per recipient.

    Raises InvalidEvent (422) naming the field, or PayloadTooLarge (413).
    """
    if not isinstance(item, dict):
        raise InvalidEvent(f"{where}each notification must be a JSON object", field="body")
    if not _ALLOWED_FIELDS.issuperset(item):
        unknown = sorted(set(item) - _ALLOWED_FIELDS)
        raise InvalidEvent(f"{where}unknown field: {', '.join(unknown)}", field=unknown[0])
    targets = _targets(item, limits, where)
    type_ = _validate_type(item.get("type"))
    message = item.get("message")
    if not isinstance(message, str):
        raise InvalidEvent(f"{where}message must be a string", field="message")
    data = item.get("data", {})
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InvalidEvent(f"{where}data must be a JSON object", field="data")
    if _utf8_size(message, "message", where) > limits.max_payload_bytes:
        raise PayloadTooLarge(f"{where}message is larger than {limits.max_payload_bytes} bytes", field="message")
    try:
        data_json = _dumps(data)
    except (ValueError, TypeError):
        raise InvalidEvent(f"{where}data must be plain JSON (no NaN or Infinity)", field="data") from None
    if _utf8_size(data_json, "data", where) > limits.max_payload_bytes:
        raise PayloadTooLarge(f"{where}data is larger than {limits.max_payload_bytes} bytes", field="data")
    return [Notification(target, type_, message, data, timestamp, data_json) for target in targets]


def parse_publish_body(raw: bytes, content_type: str | None, limits: Limits, timestamp: str) -> list[Notification]:
    """The body of ``POST /v1/publish`` -> notifications, validated as a whole.

    A batch (JSON array) is all-or-nothing: the first error raises and nothing
    is published.
    """
    media = (content_type or "").split(";")[0].strip().lower()
    if media != "application/json":
        raise UnsupportedMedia("Content-Type must be application/json")
    # The whole body may hold a batch, so its cap is the batch size times the
    # per-field limit (plus room for the envelope).
    if len(raw) > limits.max_body_bytes:
        raise PayloadTooLarge("request body too large", field="body")
    try:
        parsed = json.loads(raw, parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidEvent.bad_request(f"body is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidEvent.bad_request("body is nested too deeply") from None
    if isinstance(parsed, list):
        if not parsed:
            raise InvalidEvent("batch is empty", field="body")
        if len(parsed) > limits.max_batch:
            raise InvalidEvent(f"batch has more than {limits.max_batch} notifications", field="body")
        items: Iterable[Any] = parsed
        notifications: list[Notification] = []
        for index, item in enumerate(items):
            notifications.extend(validate_notification(item, limits, timestamp, where=f"[{index}]: "))
        if len(notifications) > limits.max_recipients:
            raise InvalidEvent(f"batch reaches more than {limits.max_recipients} recipients", field="body")
    else:
        notifications = validate_notification(parsed, limits, timestamp)
    _check_expansion(notifications, limits)
    return notifications


def _check_expansion(notifications: list[Notification], limits: Limits) -> None:
    """A request's events are stored and sent once per recipient: cap the total
    (a 64 KiB message to 1,000 users would be 64 MiB in one Lua script, stalling
    Redis for everyone). Large audiences belong on a topic or broadcast."""
    budget = limits.max_payload_bytes * limits.max_batch
    total = 0
    for notification in notifications:
        total += len(notification.message) + len(notification.encoded_data())
        if total > budget:
            raise PayloadTooLarge(
                f"the request expands to more than {budget} bytes of events (message and data times recipients); "
                "publish to a topic or broadcast instead", field="body")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


# --------------------------------------------------------------------------
# SSE framing
# --------------------------------------------------------------------------

_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def _field(name: str, value: str) -> str:
    if _CONTROL.search(value):
        # Callers validate first; this is the last line of defence against
        # field injection, so it refuses rather than rewrites.
        raise ValueError(f"SSE {name} must not contain control characters")
    return f"{name}: {value}\n"


def encode(data: str, *, event_id: str | None = None, event: str | None = None, retry_ms: int | None = None) -> bytes:
    """One SSE event as bytes.

    ``data`` may contain any text: it is split on CR, LF and CRLF only (the
    three line ends of the SSE grammar; ``str.splitlines`` would also split on
    U+2028 and friends and change the payload), each line its own ``data:``.
    """
    parts = []
    if event_id is not None:
        parts.append(_field("id", event_id))
    if event is not None:
        parts.append(_field("event", event))
    if retry_ms is not None:
        parts.append(f"retry: {int(retry_ms)}\n")
    for line in _LINE_BREAK.split(data):
        parts.append(f"data: {line}\n")
    parts.append("\n")
    return "".join(parts).encode("utf-8")


def comment(text: str = "") -> bytes:
    """An SSE comment line (ignored by clients; keeps proxies and sockets honest)."""
    safe = _LINE_BREAK.sub(" ", text)
    return f": {safe}\n\n".encode() if safe else b":\n\n"


def retry(milliseconds: int) -> bytes:
    return f"retry: {int(milliseconds)}\n\n".encode("ascii")


@dataclass(frozen=True)
class Delivery:
    """An event as every local subscriber receives it: id plus the frame bytes,
    encoded once per worker and shared by reference."""

    id: EventId
    frame: bytes
    type: str = DEFAULT_TYPE
    payload: str = ""


def delivery_from_payload(payload: str) -> Delivery:
    """Build the shared frame from the JSON payload carried by the broker.

    Precondition: ``payload`` was produced by ``splice_id`` / the Lua script
    from a validated Notification, so ``id`` and ``type`` are safe.
    """
    head = _PAYLOAD_HEAD.match(payload)
    if head is not None:
        # Every delivery of every worker passes here: read the id and type
        # from the fixed head the publisher wrote instead of parsing the JSON.
        id_text, type_ = head.group(1), head.group(4)
        event_id: EventId | None = (int(head.group(2)), int(head.group(3)))
    else:
        parsed = json.loads(payload)
        id_text = parsed["id"]
        event_id = parse_event_id(id_text)
        type_ = parsed.get("type") or DEFAULT_TYPE
    if event_id is None:
        raise ValueError(f"bad event id in payload: {id_text!r}")
    return Delivery(event_id, encode(payload, event_id=id_text, event=type_), type_, payload)


# The head of a payload as splice_id / the Lua script write it: id, one target
# field (a JSON string may hold escaped quotes, never a bare one), then type,
# which validation limits to characters JSON never escapes.
_PAYLOAD_HEAD = re.compile(
    r'\{"id":"((\d{1,15})-(\d{1,15}))",(?:"user_id":"(?:[^"\\]|\\.)*"|"topic":"[^"\\]*"|"broadcast":true),'
    r'"type":"([A-Za-z0-9:._/\-]{1,64})",')
