"""notifier/runtime/: prometheus_client, gevent, Flask, Werkzeug and json, each
internal path checked against its public fallback (or the public API it
replaced)."""

from __future__ import annotations

import _socket
import json
import time
from json.encoder import encode_basestring, encode_basestring_ascii

import gevent
import gevent.socket
import pytest
from flask import Flask
from prometheus_client import CollectorRegistry, Histogram

from notifier.runtime import flask as flask_runtime
from notifier.runtime import gevent as gevent_runtime
from notifier.runtime import prometheus as prometheus_runtime
from notifier.runtime.jsonenc import ascii_json_string, json_string
from notifier.runtime.werkzeug import status_line
from notifier.sockets import peek

BUCKETS = (0.001, 0.01, 0.1, 1.0)
AMOUNTS = [0.0005, 0.001, 0.001, 0.002, 0.05, 0.1, 0.5, 2.0, 7.0]


def histogram_samples(observe: object, labelled: bool) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    histogram = Histogram("h_seconds", "h", ["kind"] if labelled else [], buckets=BUCKETS, registry=registry)
    target = histogram.labels("a") if labelled else histogram
    observe(target, AMOUNTS)  # type: ignore[operator]
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for metric in registry.collect() for s in metric.samples if not s.name.endswith("_created")}


@pytest.mark.parametrize("labelled", [False, True])
def test_observe_many_writes_what_observe_would(labelled: bool) -> None:
    one_by_one = histogram_samples(lambda h, amounts: [h.observe(a) for a in amounts], labelled)
    assert histogram_samples(prometheus_runtime.fast_observe_many, labelled) == one_by_one
    assert histogram_samples(prometheus_runtime.public_observe_many, labelled) == one_by_one


def test_observe_many_falls_back_on_a_histogram_that_looks_different() -> None:
    class Odd:
        def __init__(self) -> None:
            self.seen: list[float] = []

        def observe(self, amount: float) -> None:
            self.seen.append(amount)

    odd = Odd()
    prometheus_runtime.fast_observe_many(odd, AMOUNTS)
    assert odd.seen == AMOUNTS


@pytest.mark.parametrize("watch_readable", [gevent_runtime.fast_watch_readable, gevent_runtime.public_watch_readable])
def test_a_readable_watch_fires_once_data_or_eof_arrives(watch_readable: object) -> None:
    left, right = gevent.socket.socketpair()
    fired: list[float] = []
    try:
        watcher = watch_readable(left.fileno(), lambda: fired.append(time.monotonic()))  # type: ignore[operator]
        if watch_readable is gevent_runtime.public_watch_readable:
            assert watcher is None, "no public watcher: streams fall back to the heartbeat's peek"
            return
        gevent.sleep(0.05)
        assert fired == []
        right.close()
        gevent.sleep(0.05)
        assert fired
        watcher.stop()
        watcher.close()
    finally:
        left.close()
        right.close()


def test_os_socket_is_the_one_inside_gevents_wrapper_and_a_peek_on_it_never_waits() -> None:
    left, right = gevent.socket.socketpair()
    try:
        inner = gevent_runtime.os_socket(left)
        assert isinstance(inner, _socket.socket) and inner.fileno() == left.fileno()
        started = time.monotonic()
        assert peek(inner) is None and peek(left) is None, "the wrapper itself is the fallback"
        assert time.monotonic() - started < 0.5
        right.close()
        assert peek(inner) == b""
    finally:
        left.close()
        right.close()


@pytest.mark.parametrize("call_after", [gevent_runtime.fast_call_after_this_turn,
                                        gevent_runtime.public_call_after_this_turn])
def test_a_callback_runs_after_the_greenlets_ready_now(call_after: object) -> None:
    order: list[str] = []
    ready = [gevent.spawn(order.append, "greenlet") for _ in range(3)]
    call_after(lambda: order.append("callback"))  # type: ignore[operator]
    gevent.joinall(ready)
    gevent.sleep(0)
    assert order[-1] == "callback" and order.count("greenlet") == 3


class HostError(Exception):
    pass


@pytest.mark.parametrize("has_handler", [flask_runtime.fast_has_error_handler, flask_runtime.public_has_error_handler])
def test_an_error_handler_is_registered_once(has_handler: object, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(flask_runtime, "has_error_handler", has_handler)
    app = Flask("host")
    assert flask_runtime.register_error_handler_once(app, HostError, lambda e: ("ours", 500))
    assert not flask_runtime.register_error_handler_once(app, HostError, lambda e: ("again", 500))
    host = Flask("host")
    host.register_error_handler(HostError, lambda e: ("host's", 500))
    kept = not flask_runtime.register_error_handler_once(host, HostError, lambda e: ("ours", 500))
    # Only Flask's own record knows about a handler the host registered first.
    assert kept is (has_handler is flask_runtime.fast_has_error_handler)


@pytest.mark.parametrize("code", [200, 202, 299, 400, 401, 403, 404, 413, 415, 422, 500, 503, 599])
def test_the_status_line_is_werkzeugs(code: int) -> None:
    app = Flask("t")

    @app.get("/")
    def view() -> tuple[str, int]:
        return "", code

    assert status_line(code) == app.test_client().get("/").status


TEXTS = ["", "plain", 'quote " and \\ backslash', "line\nbreak\r\ntab\t", "\x00\x1f\x7f", "é ü ß 中文 🚀",
         "\u2028\u2029", "\ud800 lone surrogate", "</script>"]


@pytest.mark.parametrize("text", TEXTS)
def test_a_json_string_is_what_json_dumps_writes(text: str) -> None:
    assert json_string(text) == json.dumps(text, ensure_ascii=False) == encode_basestring(text)
    assert ascii_json_string(text) == json.dumps(text) == encode_basestring_ascii(text)
