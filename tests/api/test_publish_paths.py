"""The two doors of POST /v1/publish (notifier/api/publish.py): the Flask view
and the lean WSGI path a verified publisher takes. Same request, same
answer, byte for byte; the lean path only ever takes what it is sure of."""

from __future__ import annotations

import io
import json
import logging

import pytest

from notifier import create_app

from ..support import tokens
from ..support.config import make_config
from ..support.http import assert_json_error, assert_nothing_published, open_stream

# Headers that legitimately differ between two answers.
VOLATILE = {"x-request-id", "date"}


@pytest.fixture
def flask_calls(app):
    """Counts requests that reached the Flask view (our own seam, wrapped)."""
    calls: list[str] = []
    name = "notifier_publish.publish"
    view = app.view_functions[name]

    def counted(*args, **kwargs):
        calls.append("flask")
        return view(*args, **kwargs)

    app.view_functions[name] = counted
    return calls


def warm(client, token: str) -> None:
    """Have the Flask view verify ``token`` without publishing anything: auth
    runs before the body is looked at, so a 415 leaves the token remembered."""
    response = client.post("/v1/publish", data=b"x", headers={**tokens.bearer(token), "Content-Type": "text/plain"})
    assert response.status_code == 415


def answer(response) -> tuple[str, dict[str, str], bytes]:
    headers = {name.lower(): value for name, value in response.headers.items() if name.lower() not in VOLATILE}
    return response.status, headers, response.get_data()


BAD_REQUESTS = [
    (b"{nope", "application/json"),
    (b'{"broadcast": true, "message": "x"}', "text/plain"),
    (b'{"message": "no target"}', "application/json"),
    (b'{"user_id": "alice\\r\\nevent: forged", "message": "x"}', "application/json"),
    (b'{"user_id": "alice", "message": "\\ud800"}', "application/json"),
    (b'{"user_id": "alice", "message": "x", "data": {"v": NaN}}', "application/json"),
    (json.dumps({"user_id": "alice", "message": "x" * (64 * 1024 + 1)}).encode(), "application/json"),
    (json.dumps([{"broadcast": True, "message": "x"}] * 101).encode(), "application/json"),
    (b"[" * 50_000, "application/json"),
    (b'{"user_id": "bob", "message": "not in scope"}', "application/json"),
]


@pytest.mark.parametrize("raw, content_type", BAD_REQUESTS, ids=lambda v: repr(v)[:40])
def test_both_doors_refuse_a_bad_request_with_the_same_answer(app, client, flask_calls, raw, content_type) -> None:
    chunks = _watch(client)
    token = tokens.publisher("shop", users=["alice"])
    headers = {**tokens.bearer(token), "Content-Type": content_type}
    by_flask = client.post("/v1/publish", data=raw, headers=headers)  # first use of the token: the Flask view
    assert flask_calls == ["flask"]
    by_lean = client.post("/v1/publish", data=raw, headers=headers)  # now remembered: the lean path
    assert flask_calls == ["flask"], "the second request did not reach Flask"
    assert 400 <= by_flask.status_code < 500
    assert_json_error(by_lean, by_flask.status_code)
    assert answer(by_lean) == answer(by_flask)
    assert by_lean.headers["Cache-Control"] == "no-store"
    assert_nothing_published(client, app, chunks)


def test_both_doors_accept_with_the_same_reply_shape(app, client, flask_calls) -> None:
    chunks = _watch(client)
    token = tokens.publisher()
    headers = {**tokens.bearer(token), "Content-Type": "application/json", "X-Request-ID": "pub-1"}
    body = json.dumps([{"user_ids": ["alice", "bob"], "type": "t.x", "message": "hi"}, {"topic": "orders:1", "message": "t"},
                       {"broadcast": True, "message": "b"}])
    first = client.post("/v1/publish", data=body, headers=headers)
    second = client.post("/v1/publish", data=body, headers=headers)
    assert flask_calls == ["flask"]
    assert first.status_code == second.status_code == 202
    assert second.headers["X-Request-ID"] == "pub-1" and second.mimetype == "application/json"
    shape = [{k: v for k, v in item.items() if k != "id"} for item in first.get_json()["published"]]
    assert [{k: v for k, v in item.items() if k != "id"} for item in second.get_json()["published"]] == shape
    assert shape[0] == {"user_id": "alice", "type": "t.x", "receivers": 1}
    assert set(answer(first)[1]) == set(answer(second)[1]), "the same headers"
    ids = [item["id"] for reply in (first, second) for item in reply.get_json()["published"]]
    assert ids == sorted(ids) and len(set(ids)) == 8
    # alice's stream got her message, the broadcast, twice each, in id order.
    seen = b""
    while seen.count(b"id: ") < 4:
        seen += next(chunks)
    assert [line[4:] for line in seen.decode().splitlines() if line.startswith("id: ")] == [ids[0], ids[3], ids[4], ids[7]]


@pytest.mark.parametrize("change", ["query string", "chunked", "unknown token", "GET"])
def test_the_lean_path_leaves_what_it_is_not_sure_of_to_flask(client, flask_calls, change) -> None:
    token = tokens.publisher()
    warm(client, token)
    body = json.dumps({"user_id": "alice", "message": "hi"}).encode()
    headers = {**tokens.bearer(token), "Content-Type": "application/json"}
    if change == "query string":
        response = client.post("/v1/publish?access_token=x", data=body, headers=headers)
        assert_json_error(response, 401)  # the query-token rule still applies to a remembered token
    elif change == "chunked":
        # What gunicorn hands over for a chunked request: a de-chunked stream, no length.
        kwargs: dict = {"input_stream": io.BytesIO(body), "headers": {**headers, "Transfer-Encoding": "chunked"},
                        "environ_overrides": {"wsgi.input_terminated": True, "CONTENT_LENGTH": ""}}
        response = client.post("/v1/publish", **kwargs)
        assert response.status_code == 202
    elif change == "unknown token":
        response = client.post("/v1/publish", data=body, headers={**headers, **tokens.bearer(tokens.publisher())})
        assert response.status_code == 202
    else:
        assert_json_error(client.get("/v1/publish", headers=headers), 405)
    assert len(flask_calls) == (1 if change == "GET" else 2)


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_the_lean_path_logs_and_counts_like_flask(app, client, flask_calls) -> None:
    token = tokens.publisher()
    warm(client, token)
    metrics = app.extensions["notifier"].metrics
    before = metrics.events_published.labels("user")._value.get()
    errors_before = metrics.publish_errors.labels("422")._value.get()
    headers = {**tokens.bearer(token), "Content-Type": "application/json", "X-Request-ID": "req-lean-7"}
    collect = Collect()
    logging.getLogger("notifier.access").addHandler(collect)
    try:
        ok = client.post("/v1/publish", data=json.dumps({"user_ids": ["a", "b"], "message": "m"}), headers=headers)
        bad = client.post("/v1/publish", data=b'{"message": "x"}', headers=headers)
        assert collect.records == [], "the access line waits until the reply is sent"
        ok.close()  # what a WSGI server does after the last write
        bad.close()
    finally:
        logging.getLogger("notifier.access").removeHandler(collect)
    assert (ok.status_code, bad.status_code) == (202, 422)
    assert len(flask_calls) == 1, "both went the lean way"
    assert metrics.events_published.labels("user")._value.get() == before + 2
    assert metrics.publish_errors.labels("422")._value.get() == errors_before + 1
    lines = collect.records
    assert [(r.request_id, r.method, r.path, r.status) for r in lines] == [  # type: ignore[attr-defined]
        ("req-lean-7", "POST", "/v1/publish", 202), ("req-lean-7", "POST", "/v1/publish", 422)]
    assert all(token not in record.getMessage() and token not in str(vars(record)) for record in lines)


def test_a_mounted_app_has_only_the_flask_door() -> None:
    """In a host app the host's hooks must see every request: no WSGI wrapper."""
    from flask import Flask

    from notifier import Notifier

    host = Flask("host")
    seen: list[str] = []
    host.before_request(lambda: seen.append("hook") and None)
    Notifier(host, make_config())
    try:
        client = host.test_client()
        token = tokens.publisher()
        for _ in range(2):
            response = client.post("/v1/publish", data=json.dumps({"user_id": "a", "message": "m"}),
                                   headers={**tokens.bearer(token), "Content-Type": "application/json"})
            assert response.status_code == 202
        assert seen == ["hook", "hook"]
    finally:
        host.extensions["notifier"].stop()


def test_create_app_puts_the_lean_door_in_front() -> None:
    from notifier.api.publish import LeanPublish

    app = create_app(make_config())
    try:
        assert isinstance(app.wsgi_app, LeanPublish)
    finally:
        app.extensions["notifier"].stop()


def _watch(client):
    response, chunks = open_stream(client, tokens.bearer(tokens.token("alice")))
    next(chunks)
    return chunks


def test_the_reply_is_what_one_json_encoding_of_it_gives() -> None:
    from notifier.envelope import reply_body
    from notifier.errors import json_bytes
    from notifier.events import Published
    from notifier.validation import Limits, validate_notification

    notes = validate_notification({"user_ids": ['a"b\\', "\u00e9\u2028", "plain"], "type": "x.y", "message": "m"}, Limits(), "t")
    notes += validate_notification({"topic": "orders:1", "message": "m"}, Limits(), "t")
    notes += validate_notification({"broadcast": True, "message": "m"}, Limits(), "t")
    published = [Published(f"17-{i}", note, i) for i, note in enumerate(notes)]
    expected = {"published": [], "count": len(published)}
    for item in published:
        target = item.notification.target
        where = {"user_id": target.name} if target.kind == "user" else {"topic": target.name} if target.kind == "topic" \
            else {"broadcast": True}
        expected["published"].append({"id": item.id, **where, "type": item.notification.type, "receivers": item.receivers})
    assert reply_body(published) == json_bytes(expected)
    assert reply_body([]) == json_bytes({"published": [], "count": 0})
