"""Helpers for tests that drive the app through the unbuffered Werkzeug client."""

from __future__ import annotations

import pytest

from . import tokens
from .sse import SSEParser


def open_stream(client, headers=None, query=""):
    response = client.get("/v1/events" + query, headers=headers or {}, buffered=False)
    return response, iter(response.response)


def publish(client, body, token=None):
    return client.post("/v1/publish", json=body, headers=tokens.bearer(token or tokens.publisher()))


def events_in(chunk: bytes):
    return SSEParser().feed(chunk.decode())


def refuse_event_stream(response, expected: str) -> None:
    """Fail at once when ``response`` is an event stream, without reading it:
    an open stream's body never ends (heartbeats until the token expires), so
    reading it to build a failure message would hang the test until pytest's
    timeout instead of failing."""
    if response.mimetype == "text/event-stream":
        response.close()  # releases the subscription; the body is never read
        pytest.fail(f"expected {expected}, got a {response.status_code} event stream (body not read)")


def assert_json_error(response, status: int, code: str | None = None):
    refuse_event_stream(response, f"a {status} JSON error")
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"error"} and body["error"]["message"]
    if code:
        assert body["error"]["code"] == code
    return body["error"]


def assert_nothing_published(client, app, chunks) -> None:
    """No event reached history, and the open stream got only a heartbeat."""
    assert app.extensions["notifier"].core.history.last_id() == (0, 0)
    assert next(chunks) == b":\n\n"


def all_notifications(base_url: str, headers: dict[str, str], timeout: float = 10) -> list[dict]:
    """Every notification a user can list (over a real server), newest first,
    following ``next_before`` page by page (a page holds at most 100)."""
    import requests

    found: list[dict] = []
    query = "?limit=100"
    for _ in range(1000):  # bounded: 100,000 notifications
        page = requests.get(base_url + "/v1/notifications" + query, headers=headers, timeout=timeout)
        assert page.status_code == 200, page.text
        body = page.json()
        found += body["notifications"]
        if not body["next_before"]:
            return found
        query = "?limit=100&before=" + body["next_before"]
    raise AssertionError("more pages than expected")
