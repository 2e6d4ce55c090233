"""NOTIFIER_PUBLISH_RATE: a token bucket per publisher, in the one publish
pipeline, so both doors (Flask and the lean path) refuse alike: 429, JSON,
Retry-After, and nothing published."""

from __future__ import annotations

import re

import pytest

from notifier import create_app

from ..support import tokens
from ..support.config import make_config
from ..support.http import assert_json_error, publish


@pytest.fixture
def limited():
    application = create_app(make_config(publish_rate=0.5, publish_burst=2))
    yield application
    application.extensions["notifier"].stop()


def stored(app) -> int:
    return app.extensions["notifier"].core.history.last_id()


@pytest.mark.parametrize("door", ["lean", "flask"])
def test_a_publisher_over_its_rate_gets_429_with_retry_after(limited, door) -> None:
    client = limited.test_client()
    same = tokens.publisher("billing")

    def token() -> str:
        # The same token again goes through the lean door once verified; a new one through Flask.
        return same if door == "lean" else tokens.publisher("billing")

    assert publish(client, {"user_id": "a", "message": "1"}, token()).status_code == 202
    assert publish(client, {"user_id": "a", "message": "2"}, token()).status_code == 202
    before = stored(limited)
    refused = publish(client, {"user_id": "a", "message": "3"}, token())
    error = assert_json_error(refused, 429, "rate_limited")
    assert "billing" in error["message"] and "0.5 requests per second" in error["message"]
    assert refused.headers["Retry-After"] == "2"
    assert refused.headers["X-Content-Type-Options"] == "nosniff"
    assert stored(limited) == before, "nothing was published"
    assert publish(client, {"user_id": "a", "message": "4"}, tokens.publisher("shipping")).status_code == 202


def refusals(app) -> float:
    exposition = app.extensions["notifier"].metrics.exposition()[0].decode()
    found = re.search(r'^notifier_publish_errors_total\{status="429"\} (\S+)$', exposition, re.M)
    return float(found.group(1)) if found else 0.0


def test_refusals_are_counted(limited) -> None:
    client = limited.test_client()
    before = refusals(limited)
    for _ in range(3):
        publish(client, {"user_id": "a", "message": "m"})
    assert refusals(limited) == before + 1


def test_a_rate_of_zero_is_no_limit(client, app) -> None:
    assert app.extensions["notifier"].guards.publish_rate is not None, "on by default"
    unlimited = create_app(make_config(publish_rate=0))
    try:
        assert unlimited.extensions["notifier"].guards.publish_rate is None
        c = unlimited.test_client()
        assert all(publish(c, {"user_id": "a", "message": "m"}).status_code == 202 for _ in range(30))
    finally:
        unlimited.extensions["notifier"].stop()
