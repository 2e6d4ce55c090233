"""The HTTP status line as Werkzeug writes it (``202 ACCEPTED``), for a WSGI
path that answers without building a Werkzeug response.

Public API only: Werkzeug's own ``Response(status=code).status``, asked once
per status code and remembered, so a call costs a dict lookup, as spelling it
ourselves did.
"""

from __future__ import annotations

from werkzeug.wrappers import Response

_LINES: dict[int, str] = {}


def status_line(code: int) -> str:
    """``status_line(202)`` -> ``"202 ACCEPTED"``; an unknown code reads ``UNKNOWN``."""
    line = _LINES.get(code)
    if line is None:
        line = _LINES[code] = Response(status=code).status
    return line
