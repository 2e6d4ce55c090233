"""``GET /v1/client.js``: the browser helper (``notifier/static/client.js``), an
ES module with no dependencies, served by notifier itself so a page imports
the helper that matches the server it talks to."""

from __future__ import annotations

import hashlib
from functools import lru_cache
from importlib import resources

from flask import Blueprint, Response, request

bp = Blueprint("notifier_client", __name__)


@lru_cache(maxsize=1)
def _client_js() -> tuple[bytes, str]:
    source = resources.files("notifier").joinpath("static/client.js").read_bytes()
    return source, hashlib.sha256(source).hexdigest()[:32]


@bp.get("/v1/client.js")
def client_js() -> Response:
    source, etag = _client_js()
    response = Response(source, mimetype="text/javascript")
    response.set_etag(etag)
    # Revalidated on every load (cheap: a 304), so an upgrade reaches pages at once.
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.make_conditional(request)
    return response
