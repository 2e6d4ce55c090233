"""JSON-lines logging to stdout, and the request id that ties lines together.

Never logged: tokens, cookies, query strings (a token could hide there even
though we refuse it), or request bodies.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_RESERVED = set(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}
_LINE = json.JSONEncoder(default=str, ensure_ascii=False)  # one encoder, not one per line

access_log = logging.getLogger("notifier.access")


class JsonFormatter(logging.Formatter):
    _second = -1
    _second_text = ""

    def _timestamp(self, created: float, msecs: float) -> str:
        second = int(created)
        if second != self._second:  # one strftime per second, not per line
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._second_text}.{int(msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": self._timestamp(record.created, record.msecs),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return _LINE.encode(line)


class _StdoutHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stdout`` is now (it may be replaced after setup).

    In a serving worker (``flush_after_each_turn``) a line is flushed with the
    others written in the same turn of the event loop: one write to the pipe
    or file per turn instead of one per line (each publish logs one). A line
    waits at most that turn; closing the handler (logging's shutdown at
    exit) flushes at once."""

    _defer: Callable[[Callable[[], None]], None] | None = None
    _flush_due = False

    @property
    def stream(self) -> Any:
        return sys.stdout

    @stream.setter
    def stream(self, value: Any) -> None:
        pass

    def flush(self) -> None:
        if self._defer is None:
            super().flush()
        elif not self._flush_due:
            self._flush_due = True
            try:
                self._defer(self._flush_now)
            except BaseException:
                self._flush_due = False
                raise

    def _flush_now(self) -> None:
        self._flush_due = False
        try:
            super().flush()
        except Exception:  # noqa: BLE001 - a closed or broken stdout: as emit, never up into the loop
            self.handleError(logging.makeLogRecord({"name": "notifier", "msg": "flush"}))

    def close(self) -> None:
        self._defer = None
        super().flush()
        super().close()


def flush_after_each_turn(defer: Callable[[Callable[[], None]], None]) -> None:
    """notifier's stdout lines (``configure_logging``) flushed once per turn of
    the event loop, ``defer`` scheduling a call after the current turn."""
    for handler in logging.getLogger("notifier").handlers:
        if isinstance(handler, _StdoutHandler):
            handler._defer = defer


def configure_logging(level: str = "INFO") -> None:
    """Route the ``notifier`` loggers to stdout as JSON (idempotent)."""
    logger = logging.getLogger("notifier")
    logger.setLevel(level)
    if not any(getattr(h, "_notifier", False) for h in logger.handlers):
        handler = _StdoutHandler()
        handler.setFormatter(JsonFormatter())
        handler._notifier = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.propagate = False


def adopt_handlers(source: logging.Logger) -> bool:
    """A host app served by gunicorn that configured no logging of its own:
    notifier's lines go where gunicorn's own go (``source``, its error log)
    rather than nowhere. Does nothing when the host (a root handler) or the
    standalone service (``configure_logging``) already routes them. True when
    it routed them."""
    logger = logging.getLogger("notifier")
    if logger.handlers or logging.getLogger().handlers or not source.handlers:
        return False
    for handler in source.handlers:
        logger.addHandler(handler)
    logger.setLevel(source.getEffectiveLevel())
    return True


def request_id_from(header_value: str | None) -> str:
    """Reuse the caller's X-Request-ID when it is sane, else make one."""
    if header_value and _REQUEST_ID.match(header_value):
        return header_value
    return uuid.uuid4().hex


def log_request(request_id: str | None, method: str, path: str, status: int, started: float, remote: str | None) -> None:
    """The access line of one (non-streaming) request. ``path`` never carries the query string."""
    if not access_log.isEnabledFor(logging.INFO):
        return
    fields = {
        "request_id": request_id,
        "method": method,
        "path": path,
        "status": status,
        "duration_ms": round((time.monotonic() - started) * 1000, 2),
        "remote": remote,
    }
    # makeRecord + handle is what Logger.info does, minus the stack walk that
    # looks for the caller's file and line (which this line does not log).
    access_log.handle(access_log.makeRecord(access_log.name, logging.INFO, "", 0, "request", (), None, extra=fields))

