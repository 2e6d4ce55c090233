"""Events as values, their ids, and the SSE wire format.

Pure: no flask, redis or gevent imports, so every rule here is table-tested.
How an event is spelled as JSON (stored, published, streamed) is
``envelope.py``; how a publish request is checked is ``validation.py``.

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

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

DEFAULT_TYPE = "notification"

# Characters that must never reach an SSE field line: CR and LF end a field
# (a publisher could forge a second event), NUL is rejected by browsers, and
# the other C0/C1 controls have no business in an identifier.
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_EVENT_ID = re.compile(r"^(\d{1,15})-(\d{1,15})$")

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


_second: tuple[int, str] = (-1, "")  # the last whole second formatted, and its text (one tuple: thread-safe)


def utc_timestamp(now: datetime | None = None) -> str:
    """RFC 3339 in UTC with millisecond precision: ``2026-11-29T15:40:00.123Z``.
    Every publish stamps one: the second's text is reused within the second."""
    if now is not None:
        return now.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    global _second
    at = time.time()
    second = int(at)
    cached = _second
    if cached[0] != second:
        cached = _second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    return f"{cached[1]}.{int((at - second) * 1000):03d}Z"


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
    """A validated notification before it has an id (``validation.py`` makes them).

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


@dataclass(frozen=True)
class Published:
    """One stored event, as the publish API reports it."""

    id: str
    notification: Notification
    receivers: int  # worker processes (Redis) or local streams (memory) that had a subscriber


@dataclass(frozen=True)
class Delivery:
    """An event as every local subscriber receives it: id plus the frame bytes,
    encoded once per worker and shared by reference. ``payload`` is the
    envelope (``envelope.py``) the frame carries."""

    id: EventId
    frame: bytes
    type: str = DEFAULT_TYPE
    payload: str = ""


@dataclass(frozen=True)
class ReadState:
    """How far a user has read: everything up to ``up_to``, plus single ``ids`` after it."""

    up_to: EventId = ZERO_ID
    ids: frozenset[EventId] = frozenset()

    def is_read(self, event_id: EventId) -> bool:
        return event_id <= self.up_to or event_id in self.ids


# --------------------------------------------------------------------------
# SSE framing
# --------------------------------------------------------------------------

_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def _field(name: str, value: str) -> str:
    if CONTROL_CHARACTERS.search(value):
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
