"""The auth edges: which credential wins when a request carries two, which
tokens count as credentials at all (type, issuer, audience), key rotation by
``kid``, and refusals that say what is wrong in our words."""

from __future__ import annotations

import base64
import json

import pytest

from notifier import create_app
from notifier.auth import TokenRequest, mint_token

from ..support import tokens
from ..support.config import make_config
from ..support.http import assert_json_error, events_in, open_stream, publish


def stream_of(client, headers):
    """Open a stream, prove whose it is by publishing to bob and to alice, close it."""
    response, chunks = open_stream(client, headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    next(chunks)
    for user in ("alice", "bob"):
        assert publish(client, {"user_id": user, "message": f"for {user}"}).status_code == 202
    seen = events_in(next(chunks))
    response.close()
    return {event.json()["user_id"] for event in seen}


def test_an_explicit_bearer_header_wins_over_the_cookie(client) -> None:
    client.set_cookie("notifier_access", tokens.token("alice"), domain="localhost")
    assert stream_of(client, tokens.bearer(tokens.token("bob"))) == {"bob"}
    assert stream_of(client, {}) == {"alice"}, "without a header the cookie is the credential"


def test_a_garbage_cookie_next_to_a_valid_header_is_not_a_401(client) -> None:
    client.set_cookie("notifier_access", "garbage", domain="localhost")
    assert stream_of(client, tokens.bearer(tokens.token("bob"))) == {"bob"}


def test_an_invalid_header_is_refused_even_with_a_valid_cookie(client, app) -> None:
    client.set_cookie("notifier_access", tokens.token("alice"), domain="localhost")
    response, _ = open_stream(client, tokens.bearer("not.a.jwt"))
    assert assert_json_error(response, 401)["message"] == "token is malformed (not a signed JWT)"
    assert len(app.extensions["notifier"].hub) == 0


def test_another_authorization_scheme_leaves_the_cookie_in_charge(client) -> None:
    # A browser behind a proxy's Basic auth sends that header on every request.
    client.set_cookie("notifier_access", tokens.token("alice"), domain="localhost")
    assert stream_of(client, {"Authorization": "Basic YWxpY2U6cHc="}) == {"alice"}


@pytest.mark.parametrize("header", ["Basic YWxpY2U6cHc=", "Token abc", "bearer abc", "Bearer"])
def test_a_header_without_bearer_is_reported_as_such(client, header) -> None:
    response, _ = open_stream(client, {"Authorization": header})
    assert "Authorization header must be 'Bearer <token>'" in assert_json_error(response, 401)["message"]
    response = client.post("/v1/publish", json={"user_id": "a", "message": "m"}, headers={"Authorization": header})
    assert "Authorization header must be 'Bearer <token>'" in assert_json_error(response, 401)["message"]


def test_no_credential_at_all_is_a_missing_token(client) -> None:
    response, _ = open_stream(client, {})
    assert assert_json_error(response, 401)["message"].startswith("missing token")


def untyped(sub: str, **claims) -> str:
    import time

    import jwt

    now = int(time.time())
    return jwt.encode({"sub": sub, "iat": now, "exp": now + 600, **claims}, tokens.SECRET, algorithm="HS256")


@pytest.mark.parametrize("make", [
    lambda **claims: tokens.token("alice", token_type="id", **claims),
    lambda **claims: tokens.token("alice", token_type="", **claims),
    lambda **claims: untyped("alice", **claims),
], ids=["id-token", "empty-type", "no-type"])
def test_only_access_tokens_subscribe_or_publish(client, app, make) -> None:
    response, _ = open_stream(client, tokens.bearer(make()))
    assert assert_json_error(response, 401)["message"] == 'token type must be "access" (the type claim)'
    response = publish(client, {"user_id": "alice", "message": "m"}, token=make(role="publisher"))
    assert assert_json_error(response, 401)["message"] == 'token type must be "access" (the type claim)'
    assert app.extensions["notifier"].core.history.last_id() == (0, 0)


@pytest.mark.parametrize("token, message", [
    (tokens.token(secret="another-secret-" + "y" * 40), "token signature does not verify"),
    (tokens.token(algorithm="HS512"), "token is signed with an algorithm this service does not accept"),
    (tokens.token(ttl=-60), "token has expired"),
    (tokens.token(nbf=4102444800), "token is not valid yet (nbf or iat is in the future)"),
    ("a.b.c", "token is malformed (not a signed JWT)"),
])
def test_token_refusals_are_in_our_words(client, token, message) -> None:
    response, _ = open_stream(client, tokens.bearer(token))
    assert assert_json_error(response, 401)["message"] == message


@pytest.fixture
def strict_app():
    application = create_app(make_config(jwt_issuer="https://auth.example", jwt_audience="notifier"))
    yield application
    application.extensions["notifier"].stop()


@pytest.mark.parametrize("claims, message", [
    ({}, "token has no iss claim"),
    ({"iss": "https://evil.example", "aud": "notifier"}, "token comes from another issuer (iss)"),
    ({"iss": "https://auth.example"}, "token has no aud claim"),
    ({"iss": "https://auth.example", "aud": "billing"}, "token is meant for another audience (aud)"),
])
def test_issuer_and_audience_are_checked_when_configured(strict_app, claims, message) -> None:
    client = strict_app.test_client()
    response, _ = open_stream(client, tokens.bearer(tokens.token("alice", **claims)))
    assert assert_json_error(response, 401)["message"] == message
    response = publish(client, {"user_id": "alice", "message": "m"}, token=tokens.publisher(**claims))
    assert assert_json_error(response, 401)["message"] == message


def test_the_right_issuer_and_audience_are_accepted(strict_app) -> None:
    client = strict_app.test_client()
    good = {"iss": "https://auth.example", "aud": ["notifier", "other"]}
    response, _ = open_stream(client, tokens.bearer(tokens.token("alice", **good)))
    assert response.status_code == 200
    response.close()
    assert publish(client, {"user_id": "alice", "message": "m"}, token=tokens.publisher(**good)).status_code == 202
    # What `notifier token` mints carries both.
    minted = mint_token(strict_app.extensions["notifier"].config, TokenRequest("alice"))
    response, _ = open_stream(client, tokens.bearer(minted))
    assert response.status_code == 200
    response.close()


def jwks(*keys: tuple[str, bytes]) -> str:
    return json.dumps({"keys": [{"kty": "oct", "kid": kid, "k": base64.urlsafe_b64encode(secret).rstrip(b"=").decode()}
                                for kid, secret in keys]})


OLD = ("2025-01", b"o" * 48)
NEW = ("2025-07", b"n" * 48)


def signed(key: tuple[str, bytes], sub: str = "alice", **claims) -> str:
    import time
    import uuid

    import jwt

    now = int(time.time())
    payload = {"sub": sub, "iat": now, "exp": now + 600, "type": "access", "jti": uuid.uuid4().hex, **claims}
    return jwt.encode(payload, key[1], algorithm="HS256", headers={"kid": key[0]})


def accepted(key_set: str, token: str) -> tuple[int, str]:
    """Each phase of a rotation is a new deployment: the key set is read at startup."""
    application = create_app(make_config(jwt_secret=None, jwt_jwks=key_set))
    try:
        response, _ = open_stream(application.test_client(), tokens.bearer(token))
        status = response.status_code
        message = "" if status == 200 else response.get_json()["error"]["message"]
        response.close()
        return status, message
    finally:
        application.extensions["notifier"].stop()


def test_key_rotation_old_and_new_tokens_both_work_until_the_old_key_is_removed() -> None:
    old_token, new_token = signed(OLD), signed(NEW)
    # 1. Before: only the old key.
    assert accepted(jwks(OLD), old_token)[0] == 200
    assert accepted(jwks(OLD), new_token)[0] == 401
    # 2. The new key is added (first: it signs from now on); tokens of both keys work.
    assert accepted(jwks(NEW, OLD), old_token)[0] == 200
    assert accepted(jwks(NEW, OLD), new_token)[0] == 200
    # 3. The old key is removed: its tokens stop working, the new ones go on.
    assert accepted(jwks(NEW), old_token) == (
        401, "token is signed with a key this service does not (or no longer) accept (kid)")
    assert accepted(jwks(NEW), new_token)[0] == 200


def test_with_a_key_set_every_token_names_its_key() -> None:
    status, message = accepted(jwks(OLD), tokens.token("alice", secret=OLD[1].decode()))
    assert (status, message) == (401, "token has no key id (kid) in its header; this service verifies by kid")
    # A kid of the set does not make a token signed with another key valid.
    assert accepted(jwks(OLD), signed((OLD[0], b"x" * 48)))[0] == 401


def test_minted_tokens_are_signed_with_the_first_key_and_name_it() -> None:
    config = make_config(jwt_secret=None, jwt_jwks=jwks(NEW, OLD))
    minted = mint_token(config, TokenRequest("alice"))
    import jwt

    assert jwt.get_unverified_header(minted)["kid"] == NEW[0]
    assert accepted(jwks(NEW), minted)[0] == 200
