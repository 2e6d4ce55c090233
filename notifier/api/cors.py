"""Cross-origin browsers: which pages on other origins may read what.

Only the endpoints a browser uses (the stream, the recent page, stream
tickets), only from the exact origins in NOTIFIER_CORS_ORIGINS, and with
credentials (the cookie) because that is how a browser subscribes. The
response names the one requesting origin, never ``*`` (which browsers refuse
with credentials anyway, and which would hand every site the user's events).
``/v1/publish`` is server-to-server: no CORS, so no browser page can publish.
"""

from __future__ import annotations

from flask import Flask
from flask_cors import CORS

BROWSER_PATHS = (r"^/v1/events$", r"^/v1/notifications$", r"^/v1/stream-tickets$")


def allow_origins(app: Flask, origins: tuple[str, ...]) -> None:
    if not origins:
        return
    CORS(
        app,
        resources={path: {} for path in BROWSER_PATHS},
        origins=list(origins),
        supports_credentials=True,
        allow_headers=["Authorization", "Content-Type", "Last-Event-ID"],
        expose_headers=["Retry-After", "X-Request-ID"],
        methods=["GET", "POST"],
        max_age=600,
    )
