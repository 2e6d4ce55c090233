"""Validation of publish requests: the edge, so everything inside trusts it.

Pure: no flask, redis or gevent imports. One publish object becomes one
``Notification`` per recipient; a batch is validated whole.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .envelope import dumps, encoded_data
from .errors import InvalidEvent, PayloadTooLarge, UnsupportedMedia
from .events import BROADCAST, CONTROL_CHARACTERS, DEFAULT_TYPE, Notification, Target

# Topic names end up in Redis channel names and in tokens' grant patterns.
# Used with fullmatch: "$" would also accept a trailing newline.
_TOPIC = re.compile(r"[A-Za-z0-9][A-Za-z0-9:._/@\-]{0,199}")
_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9:._/\-]{0,63}")
MAX_USER_ID_LENGTH = 256


@dataclass(frozen=True)
class Limits:
    max_payload_bytes: int = 64 * 1024
    max_batch: int = 100
    max_recipients: int = 1000
    max_data_depth: int = 32

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
    if CONTROL_CHARACTERS.search(value):
        raise InvalidEvent(f"{field_name} must not contain control characters (CR, LF, NUL...)", field=field_name)
    if not value.isascii():
        _utf8_size(value, field_name)
    return value


def validate_topic(value: Any, field_name: str = "topic") -> str:
    if not isinstance(value, str) or not value:
        raise InvalidEvent(f"{field_name} must be a non-empty string", field=field_name)
    if CONTROL_CHARACTERS.search(value):
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
    if CONTROL_CHARACTERS.search(value):
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


def nesting_depth(value: Any, stop_above: int) -> int:
    """How deeply objects and arrays nest in ``value`` (``{}`` is 1), counted
    without recursion and no further than ``stop_above + 1``: a stored event
    that every reader must parse back has to stay far from the parser's own
    recursion limit, and this check must not hit it either."""
    deepest = 0
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        node, depth = pending.pop()
        if isinstance(node, dict):
            children: Iterable[Any] = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > stop_above:
            return deepest
        pending.extend((child, depth + 1) for child in children)
    return deepest


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
    if message is None:
        raise InvalidEvent(f"{where}message is required", field="message")
    if not isinstance(message, str):
        raise InvalidEvent(f"{where}message must be a string", field="message")
    data = item.get("data", {})
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InvalidEvent(f"{where}data must be a JSON object", field="data")
    if nesting_depth(data, limits.max_data_depth) > limits.max_data_depth:
        raise InvalidEvent(f"{where}data is nested more than {limits.max_data_depth} levels deep", field="data")
    if _utf8_size(message, "message", where) > limits.max_payload_bytes:
        raise PayloadTooLarge(f"{where}message is larger than {limits.max_payload_bytes} bytes", field="message")
    try:
        data_json = dumps(data)
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
    except ValueError as exc:
        raise InvalidEvent.bad_request(_json_problem(exc)) from None
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
        total += len(notification.message) + len(encoded_data(notification))
        if total > budget:
            raise PayloadTooLarge(
                f"the request expands to more than {budget} bytes of events (message and data times recipients); "
                "publish to a topic or broadcast instead", field="body")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _json_problem(exc: ValueError) -> str:
    """What is wrong with a body that did not parse, in our words (the
    parser's own messages can name interpreter settings)."""
    if isinstance(exc, UnicodeDecodeError):
        return "body is not valid JSON: it is not UTF-8 text"
    if isinstance(exc, json.JSONDecodeError):
        return f"body is not valid JSON: {exc.msg[0].lower()}{exc.msg[1:]} at line {exc.lineno} column {exc.colno}"
    if "integer string conversion" in str(exc):
        return f"body is not valid JSON here: a number has more than {sys.get_int_max_str_digits()} digits"
    return f"body is not valid JSON: {exc}"  # our own parse_constant's message
