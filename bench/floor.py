"""The floor: what gunicorn with gevent workers costs before notifier does
anything, so that a gap to Nchan can be split into what the Python server
costs and what notifier adds.

``python -m bench.run connect publish --server floor`` serves ``app`` below
with notifier's own ``gunicorn.conf.py`` (the same workers, worker class,
connection limit and write patch): ``GET /v1/events`` answers the SSE
headers and the first chunk notifier sends, then holds the connection with
a comment every 15 s, checking no token and subscribing to nothing;
``POST /v1/publish`` reads the body and answers 202 with nothing published.
No Redis, no Flask, no access line, no metrics.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import gevent

HEARTBEAT_SECONDS = 15.0
FIRST_CHUNK = b"retry: 3000\n\n: connected\n\n"  # what a notifier stream sends first
SSE_HEADERS = [("Content-Type", "text/event-stream; charset=utf-8"), ("Cache-Control", "no-cache"),
               ("X-Accel-Buffering", "no")]
REPLY = b'{"published": []}'


def held() -> Iterator[bytes]:
    yield FIRST_CHUNK
    while True:
        gevent.sleep(HEARTBEAT_SECONDS)
        yield b":\n\n"


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    path, method = environ.get("PATH_INFO"), environ.get("REQUEST_METHOD")
    if path == "/v1/events" and method == "GET":
        start_response("200 OK", SSE_HEADERS)
        return held()
    if path == "/v1/publish" and method == "POST":
        environ["wsgi.input"].read()
        start_response("202 Accepted", [("Content-Type", "application/json"), ("Content-Length", str(len(REPLY)))])
        return [REPLY]
    if path in ("/readyz", "/livez"):
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]
    start_response("404 Not Found", [("Content-Length", "0")])
    return []
