"""Isolation, as a property: random users, topic grants, publisher scopes and
publishes against the real service (gunicorn, 2 gevent workers, a real
redis-server). No stream ever receives an event not addressed to it, every
addressed event arrives exactly once, and a publish is refused (403)
exactly when the publisher's scope does not reach its target."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlencode

import pytest
import requests
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from notifier.auth import pattern_allows

from ..support import tokens
from ..support.processes import Gunicorn, redis_and_gunicorn
from ..support.sse import SSEConnection

pytestmark = pytest.mark.e2e

USERS = ["ann", "bob", "cid", "dee"]
TOPICS = ["orders:1", "orders:2", "news", "chat:a"]
PATTERNS = ["orders:*", "orders:1", "news", "chat:*"]


@pytest.fixture(scope="module")
def server() -> Iterator[Gunicorn]:
    with redis_and_gunicorn({"NOTIFIER_HEARTBEAT_SECONDS": "0.5"}) as (gunicorn, _):
        yield gunicorn


@dataclass(frozen=True)
class Scope:
    users: tuple[str, ...] | None  # None: every user
    topics: tuple[str, ...] | None
    broadcast: bool
    restricted: bool

    def claims(self, ns: str) -> dict:
        if not self.restricted:
            return {}
        claims: dict = {"broadcast": self.broadcast}
        if self.users is not None:
            claims["users"] = [f"{ns}{user}" for user in self.users]
        if self.topics is not None:
            claims["topics"] = [f"{ns}{pattern}" for pattern in self.topics]
        return claims

    def allows(self, kind: str, name: str) -> bool:
        if not self.restricted:
            return True
        if kind == "broadcast":
            return self.broadcast
        patterns = self.users if kind == "user" else self.topics
        return pattern_allows(name, patterns or ())


def subsets(items: list[str]) -> st.SearchStrategy[list[str]]:
    return st.lists(st.sampled_from(items), unique=True) if items else st.just([])


scopes = st.one_of(
    st.just(Scope(None, None, True, False)),
    st.builds(Scope, st.one_of(st.none(), subsets(USERS).map(tuple)), st.one_of(st.none(), subsets(PATTERNS).map(tuple)),
              st.booleans(), st.just(True)),
)
targets = st.one_of(st.tuples(st.just("user"), st.sampled_from(USERS)), st.tuples(st.just("topic"), st.sampled_from(TOPICS)),
                    st.just(("broadcast", "")))
subscribers = st.dictionaries(st.sampled_from(USERS), subsets(PATTERNS), min_size=1, max_size=4)
publishes = st.lists(st.tuples(st.integers(0, 1), targets), min_size=1, max_size=8)


def open_streams(server: Gunicorn, ns: str, grants: dict[str, list[str]], wanted: dict[str, list[str]]) -> dict[str, SSEConnection]:
    streams = {}
    for user, patterns in grants.items():
        query = urlencode([("topic", f"{ns}{topic}") for topic in wanted[user]])
        token = tokens.token(f"{ns}{user}", topics=[f"{ns}{p}" for p in patterns], ttl=120)
        connection = SSEConnection(f"{server.url}/v1/events?{query}", tokens.bearer(token))
        assert connection.status == 200, connection.read_body()
        connection.events(0.05)  # the first chunk: subscribed before anything is published
        streams[user] = connection
    return streams


def publish(server: Gunicorn, token: str, ns: str, kind: str, name: str, index: int) -> requests.Response:
    body: dict = {"message": f"{ns}#{index}"}
    if kind == "user":
        body["user_id"] = f"{ns}{name}"
    elif kind == "topic":
        body["topic"] = f"{ns}{name}"
    else:
        body["broadcast"] = True
    return requests.post(server.url + "/v1/publish", json=body, headers=tokens.bearer(token), timeout=10)


def addressed(kind: str, name: str, user: str, topics: list[str]) -> bool:
    return kind == "broadcast" or (kind == "user" and name == user) or (kind == "topic" and name in topics)


# No shrinking: a failure is reported as found, so a broken build fails in seconds, not minutes.
@settings(max_examples=20, deadline=None, database=None, suppress_health_check=list(HealthCheck),
          phases=[Phase.explicit, Phase.generate])
@given(grants=subscribers, scope_pair=st.tuples(scopes, scopes), sends=publishes, data=st.data())
def test_streams_get_exactly_what_is_addressed_to_them(server, grants, scope_pair, sends, data) -> None:
    ns = f"n{uuid.uuid4().hex[:8]}:"
    wanted = {user: data.draw(subsets([t for t in TOPICS if pattern_allows(t, patterns)])) for user, patterns in grants.items()}
    streams = open_streams(server, ns, grants, wanted)
    try:
        publisher_tokens = [tokens.publisher(f"{ns}pub{i}", **scope.claims(ns)) for i, scope in enumerate(scope_pair)]
        expected: dict[str, set[str]] = {user: set() for user in streams}
        for index, (which, (kind, name)) in enumerate(sends):
            reply = publish(server, publisher_tokens[which], ns, kind, name, index)
            allowed = scope_pair[which].allows(kind, name)
            assert reply.status_code == (202 if allowed else 403), reply.text
            if allowed:
                for user in streams:
                    if addressed(kind, name, user, wanted[user]):
                        expected[user].add(f"{ns}#{index}")
        received = collect(streams, expected)
        for user in streams:
            assert sorted(received[user]) == sorted(expected[user]), (user, grants[user], wanted[user])
    finally:
        for connection in streams.values():
            connection.close()


def collect(streams: dict[str, SSEConnection], expected: dict[str, set[str]]) -> dict[str, list[str]]:
    """Until every expected event is in (at most 5 s), then a little longer for anything that should not come."""
    received: dict[str, list[str]] = {user: [] for user in streams}
    deadline = time.monotonic() + 5
    quiet_until = None
    while time.monotonic() < (quiet_until or deadline):
        for user, connection in streams.items():
            received[user] += [event.json()["message"] for event in connection.events(0.01) if event.event != "reset"]
        if quiet_until is None and all(expected[u] <= set(received[u]) for u in streams):
            quiet_until = time.monotonic() + 0.3
    return received
