"""The verified-publisher cache (notifier/auth.py) must never accept what a
full verification would refuse."""

from __future__ import annotations

import json
import time

from notifier import create_app

from ..support import tokens
from ..support.config import make_config


def publish(client, token: str, query: str = ""):
    return client.post("/v1/publish" + query, data=json.dumps({"user_id": "alice", "message": "hi"}),
                       headers={**tokens.bearer(token), "Content-Type": "application/json"})


def test_a_remembered_token_is_still_refused_with_a_token_in_the_query(client) -> None:
    token = tokens.publisher()
    assert publish(client, token).status_code == 202
    assert publish(client, token).status_code == 202  # from the cache
    assert publish(client, token, "?access_token=x").status_code == 401


def test_a_token_is_remembered_only_until_it_expires() -> None:
    app = create_app(make_config(jwt_leeway_seconds=0))
    try:
        client = app.test_client()
        token = tokens.token("billing", role="publisher", ttl=1)
        assert publish(client, token).status_code == 202
        time.sleep(1.5)
        assert publish(client, token).status_code == 401
    finally:
        app.extensions["notifier"].stop()


def test_another_app_with_another_key_does_not_trust_it(client) -> None:
    token = tokens.publisher()
    assert publish(client, token).status_code == 202
    other = create_app(make_config(jwt_secret="another-secret-" + "y" * 40))
    try:
        assert publish(other.test_client(), token).status_code == 401
    finally:
        other.extensions["notifier"].stop()


def test_a_user_token_never_publishes_even_after_a_publisher_did(client) -> None:
    assert publish(client, tokens.publisher()).status_code == 202
    assert publish(client, tokens.token("alice")).status_code == 403
