"""Stream tickets and the publish rate across pods: two gunicorn instances
(two pods) on one real redis-server. A ticket issued by one is redeemed on
the other, once; a publisher's bucket is one bucket whichever pod it hits;
no log line ever holds a ticket."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from ..support import tokens
from ..support.processes import Gunicorn, RedisServer
from ..support.sse import SSEConnection

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def pods() -> Iterator[tuple[Gunicorn, Gunicorn]]:
    redis_server = RedisServer().start()
    env = {"NOTIFIER_REDIS_URL": redis_server.url, "NOTIFIER_JWT_SECRET": tokens.SECRET,
           "NOTIFIER_HEARTBEAT_SECONDS": "0.5", "NOTIFIER_PUBLISH_RATE": "0.2", "NOTIFIER_PUBLISH_BURST": "3"}
    started = [Gunicorn(env, workers=1), Gunicorn(env, workers=1)]
    try:
        for pod in started:
            pod.start()
        yield started[0], started[1]
    finally:
        for pod in started:
            pod.stop()
        redis_server.stop()


def test_a_ticket_from_one_pod_opens_a_stream_on_another_once(pods) -> None:
    one, other = pods
    reply = requests.post(one.url + "/v1/stream-tickets", json={"topics": ["orders:7"]},
                          headers=tokens.bearer(tokens.token("alice", topics=["orders:*"])), timeout=5)
    assert reply.status_code == 201, reply.text
    ticket = reply.json()["ticket"]
    stream = SSEConnection(f"{other.url}/v1/events?ticket={ticket}&topic=orders:7")
    try:
        assert stream.status == 200
        stream.events(0.05)
        published = requests.post(one.url + "/v1/publish", json={"topic": "orders:7", "message": "packed"},
                                  headers=tokens.bearer(tokens.publisher("shop")), timeout=5)
        assert published.status_code == 202
        assert [event.json()["message"] for event in stream.collect(1, 5)] == ["packed"]
    finally:
        stream.close()
    for pod in pods:
        again = requests.get(f"{pod.url}/v1/events?ticket={ticket}", timeout=5)
        assert again.status_code == 401 and again.json()["error"]["code"] == "unauthorized"
    for pod in pods:
        assert ticket not in pod.log(), "a ticket is never logged"


def test_a_publishers_rate_is_one_bucket_across_pods(pods) -> None:
    one, other = pods
    token = tokens.publisher("billing")
    answers = [requests.post(pod.url + "/v1/publish", json={"user_id": "a", "message": "m"},
                             headers=tokens.bearer(token), timeout=5) for pod in (one, other, one, other)]
    assert [answer.status_code for answer in answers] == [202, 202, 202, 429]
    assert answers[-1].headers["Retry-After"] == "5"
    assert answers[-1].json()["error"]["code"] == "rate_limited"


def raw_status(pod: Gunicorn, request: bytes) -> tuple[int, str]:
    import socket

    with socket.create_connection(("127.0.0.1", pod.port), timeout=5) as sock:
        sock.sendall(request)
        head = sock.recv(65536).decode("latin-1")
    status = int(head.split(" ", 2)[1])
    content_type = next((line.split(":", 1)[1].strip() for line in head.split("\r\n")
                         if line.lower().startswith("content-type:")), "")
    return status, content_type


def test_requests_gunicorn_refuses_get_its_status_codes(pods) -> None:
    """What docs/security.md says about requests that never reach the app."""
    pod = pods[0]
    assert raw_status(pod, b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n") == (414, "text/html")
    many = b"".join(b"X-%d: v\r\n" % i for i in range(101))
    assert raw_status(pod, b"GET /livez HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n") == (431, "text/html")
    assert raw_status(pod, b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Big: " + b"v" * 9000 + b"\r\n\r\n") == (431, "text/html")
    assert raw_status(pod, b"NOT HTTP AT ALL\r\n\r\n")[0] == 400
