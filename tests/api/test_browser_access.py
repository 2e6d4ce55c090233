"""Browsers on another origin: stream tickets (the one credential a URL may
carry) and CORS for the endpoints a browser uses, never for publishing."""

from __future__ import annotations

import time

import pytest

from notifier import create_app

from ..support import tokens
from ..support.config import make_config
from ..support.http import assert_json_error, events_in, open_stream, publish

TICKETS = "/v1/stream-tickets"


def issue(client, token=None, **body):
    return client.post(TICKETS, json=body or None, headers=tokens.bearer(token or tokens.token("alice")))


def test_a_ticket_opens_the_users_stream_once(client, app, capsys) -> None:
    reply = issue(client, tokens.token("alice", topics=["orders:*"]), topics=["orders:7"])
    assert reply.status_code == 201 and reply.headers["Cache-Control"] == "no-store"
    body = reply.get_json()
    assert body["expires_in"] == 30 and body["topics"] == ["orders:7"]
    ticket = body["ticket"]
    response, chunks = open_stream(client, query=f"?ticket={ticket}&topic=orders:7")
    assert response.status_code == 200
    next(chunks)
    publish(client, {"user_id": "bob", "message": "not for alice"})
    publish(client, {"topic": "orders:7", "message": "packed"})
    publish(client, {"user_id": "alice", "message": "hi alice"})
    seen: list[str] = []
    while len(seen) < 2:
        seen += [e.json()["message"] for e in events_in(next(chunks))]
    assert seen == ["packed", "hi alice"]
    response.close()
    again, _ = open_stream(client, query=f"?ticket={ticket}")
    assert "already used" in assert_json_error(again, 401, "unauthorized")["message"]
    assert ticket not in capsys.readouterr().out, "a ticket is never logged"


def test_a_ticket_grants_only_the_topics_it_was_issued_for(client) -> None:
    ticket = issue(client, tokens.token("alice", topics=["orders:*"]), topics=["orders:7"]).get_json()["ticket"]
    response, _ = open_stream(client, query=f"?ticket={ticket}&topic=orders:8")
    assert_json_error(response, 403, "forbidden")


@pytest.mark.parametrize("ticket", ["", "x", "A" * 43, "A" * 42 + "!", "A" * 44])
def test_unknown_or_malformed_tickets_are_401(client, app, ticket) -> None:
    response, _ = open_stream(client, query=f"?ticket={ticket}")
    assert_json_error(response, 401, "unauthorized")
    assert len(app.extensions["notifier"].hub) == 0


def test_a_ticket_expires(client, app) -> None:
    app.extensions["notifier"].guards.tickets.ttl_seconds = 0.05
    ticket = issue(client).get_json()["ticket"]
    time.sleep(0.15)
    response, _ = open_stream(client, query=f"?ticket={ticket}")
    assert_json_error(response, 401)


def test_a_ticket_stream_ends_when_the_token_it_came_from_expires(client) -> None:
    ticket = issue(client, tokens.token("alice", ttl=1)).get_json()["ticket"]
    response, chunks = open_stream(client, query=f"?ticket={ticket}")
    started = time.monotonic()
    assert response.status_code == 200
    for _ in chunks:
        assert time.monotonic() - started < 5
    assert time.monotonic() - started < 3


@pytest.mark.parametrize("headers, body, status", [
    ({}, None, 401),
    (tokens.bearer(tokens.publisher()), None, 403),
    (tokens.bearer(tokens.token("alice", token_type="refresh")), None, 401),
    (tokens.bearer(tokens.token("alice")), {"topics": ["orders:1"]}, 403),
    (tokens.bearer(tokens.token("alice", topics=["*"])), {"topics": ["bad topic"]}, 400),
    (tokens.bearer(tokens.token("alice", topics=["*"])), {"topics": "orders:1"}, 400),
    (tokens.bearer(tokens.token("alice", topics=["*"])), {"topics": [1]}, 400),
    (tokens.bearer(tokens.token("alice", topics=["*"])), {"topics": [f"t{i}" for i in range(21)]}, 400),
    (tokens.bearer(tokens.token("alice")), {"users": ["bob"]}, 400),
    (tokens.bearer(tokens.token("alice")), [], 400),
])
def test_ticket_requests_that_are_refused(client, app, headers, body, status) -> None:
    response = client.post(TICKETS, json=body, headers=headers)
    assert_json_error(response, status)


def test_the_cookie_alone_cannot_get_a_ticket(client) -> None:
    # A POST authenticated by the cookie alone could be forged by any site.
    client.set_cookie("notifier_access", tokens.token("alice"), domain="localhost")
    assert_json_error(client.post(TICKETS), 401)


def test_a_non_json_body_is_refused(client) -> None:
    response = client.post(TICKETS, data="topics=x", content_type="application/x-www-form-urlencoded",
                           headers=tokens.bearer(tokens.token("alice")))
    assert_json_error(response, 400)


APP_ORIGIN = "https://app.example.com"


@pytest.fixture
def cors_app():
    application = create_app(make_config(cors_origins=(APP_ORIGIN,)))
    yield application
    application.extensions["notifier"].stop()


def test_listed_origins_may_read_with_credentials(cors_app) -> None:
    client = cors_app.test_client()
    reply = client.get("/v1/notifications", headers={"Origin": APP_ORIGIN, **tokens.bearer(tokens.token())})
    assert reply.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    assert reply.headers["Access-Control-Allow-Credentials"] == "true"
    stream, _ = open_stream(client, {"Origin": APP_ORIGIN, **tokens.bearer(tokens.token())})
    assert stream.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    stream.close()
    preflight = client.options(TICKETS, headers={"Origin": APP_ORIGIN, "Access-Control-Request-Method": "POST",
                                                 "Access-Control-Request-Headers": "authorization, content-type"})
    assert preflight.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    assert "authorization" in preflight.headers["Access-Control-Allow-Headers"].lower()


@pytest.mark.parametrize("origin", ["https://evil.example", "https://app.example.com.evil.example", "null"])
def test_other_origins_get_no_cors_headers(cors_app, origin) -> None:
    client = cors_app.test_client()
    reply = client.get("/v1/notifications", headers={"Origin": origin, **tokens.bearer(tokens.token())})
    assert "Access-Control-Allow-Origin" not in reply.headers
    assert "Access-Control-Allow-Credentials" not in reply.headers


def test_publishing_has_no_cors_even_for_listed_origins(cors_app) -> None:
    client = cors_app.test_client()
    preflight = client.options("/v1/publish", headers={"Origin": APP_ORIGIN, "Access-Control-Request-Method": "POST"})
    reply = publish(client, {"user_id": "a", "message": "m"})
    for response in (preflight, reply):
        assert not any(name.lower().startswith("access-control-") for name in response.headers.keys())


def test_without_origins_there_is_no_cors_at_all(client) -> None:
    reply = client.get("/v1/notifications", headers={"Origin": APP_ORIGIN, **tokens.bearer(tokens.token())})
    assert not any(name.lower().startswith("access-control-") for name in reply.headers.keys())
