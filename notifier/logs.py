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
from typing import Any

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_RESERVED = set(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


class _StdoutHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stdout`` is now (it may be replaced after setup)."""

    @property
    def stream(self) -> Any:
        return sys.stdout

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


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


def request_id_from(header_value: str | None) -> str:
    """Reuse the caller's X-Request-ID when it is sane, else make one."""
    if header_value and _REQUEST_ID.match(header_value):
        return header_value
    return uuid.uuid4().hex
