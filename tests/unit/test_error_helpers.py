"""The test helpers that expect an error answer from ``GET /v1/events`` fail at
once when a bug makes it a 200 event stream: they never read the stream's
body (it does not end), not even to build a failure message."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ..support import tokens
from ..support.http import assert_json_error, open_stream
from ..support.refusals import get_refusal


def test_the_json_error_helper_fails_at_once_on_a_stream_and_closes_it(client, app) -> None:
    response, _ = open_stream(client, tokens.bearer(tokens.token("alice")))  # a 200 where a 401 was expected
    started = time.monotonic()
    with pytest.raises(pytest.fail.Exception, match="event stream"):
        assert_json_error(response, 401)
    assert time.monotonic() - started < 1, "failed without waiting on the stream"
    assert len(app.extensions["notifier"].hub) == 0, "the stream was closed, not left open"


@pytest.fixture
def endless_stream_url() -> Iterator[str]:
    """A loopback server whose every GET is a 200 event stream that never ends."""
    stop = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            self.end_headers()
            while not stop.is_set():
                try:
                    self.wfile.write(b":\n\n")
                    self.wfile.flush()
                except OSError:
                    return
                stop.wait(0.05)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1/events"
    stop.set()
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_get_refusal_fails_at_once_on_a_stream(endless_stream_url) -> None:
    started = time.monotonic()
    with pytest.raises(AssertionError, match="event stream"):
        get_refusal(endless_stream_url, timeout=5)
    assert time.monotonic() - started < 1, "failed without reading the endless body"
