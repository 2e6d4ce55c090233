"""The watch on each waiting stream's socket (notifier/stream.py PeerWatch):
a client that closes is noticed at once, also mid-write, and one that sends
bytes does not make the stream spin. Real sockets (a socketpair) on gevent's
loop; the heartbeat is long, so only the watch can notice."""

from __future__ import annotations

import time
from typing import Any

import gevent
import gevent.socket
import pytest

from notifier import stream as stream_module
from notifier.events import Delivery
from notifier.hub import CloseReason, Subscription
from notifier.stream import StreamPlan, event_stream


class Hooks:
    def __init__(self) -> None:
        self.finished: list[tuple[str, float]] = []

    def on_start(self) -> None:
        pass

    def on_write(self, items: list[Any]) -> None:
        pass

    def finish(self, reason: str, sent: int) -> None:
        self.finished.append((reason, time.monotonic()))


def start(write_pause: float = 0.0) -> tuple[Any, Any, Subscription, Hooks, gevent.Greenlet, list[bytes]]:
    server_side, client_side = gevent.socket.socketpair()
    subscription = Subscription("u", ["c"], 16)
    hooks = Hooks()
    plan = StreamPlan(subscription, heartbeat=30, deadline=time.monotonic() + 60, deadline_reason="deadline",
                      retry_ms=1000, raw_socket=server_side._sock)
    chunks: list[bytes] = []

    def serve() -> None:
        # What the server does with the body: write each chunk (slowly, if asked).
        for chunk in event_stream(plan, hooks):
            chunks.append(chunk)
            if write_pause and len(chunks) > 1:
                gevent.sleep(write_pause)

    greenlet = gevent.spawn(serve)
    gevent.sleep(0.05)
    assert len(chunks) == 1, "the first chunk went out"
    return server_side, client_side, subscription, hooks, greenlet, chunks


def test_a_client_that_closes_while_the_stream_waits_ends_it_at_once() -> None:
    server_side, client_side, _sub, hooks, greenlet, _chunks = start()
    closed_at = time.monotonic()
    client_side.close()
    greenlet.join(timeout=5)
    assert [reason for reason, _ in hooks.finished] == [CloseReason.CLIENT_GONE]
    assert hooks.finished[0][1] - closed_at < 0.5, "not at the 30 s heartbeat"
    server_side.close()


def test_a_client_that_closes_during_a_write_with_more_queued_is_still_noticed() -> None:
    server_side, client_side, sub, hooks, greenlet, chunks = start(write_pause=0.2)
    sub.offer(Delivery((1, 0), b"data: x\n\n"))
    gevent.sleep(0.05)  # the stream is inside its (slow) write
    closed_at = time.monotonic()
    client_side.close()
    gevent.sleep(0.05)
    sub.offer(Delivery((2, 0), b"data: y\n\n"))  # queued before the write returns
    greenlet.join(timeout=5)
    assert [reason for reason, _ in hooks.finished] == [CloseReason.CLIENT_GONE]
    assert hooks.finished[0][1] - closed_at < 1.0
    assert len(chunks) <= 3
    server_side.close()


def test_a_client_that_sends_bytes_wakes_the_stream_once_then_the_watch_is_off(monkeypatch) -> None:
    peeks: list[float] = []
    real = stream_module.client_gone

    def counting(raw_socket: Any) -> bool:
        peeks.append(time.monotonic())
        return real(raw_socket)

    monkeypatch.setattr(stream_module, "client_gone", counting)
    server_side, client_side, sub, hooks, greenlet, chunks = start()
    client_side.sendall(b"GET /next HTTP/1.1\r\n\r\n")  # unread bytes keep the socket readable
    gevent.sleep(0.3)
    assert len(peeks) == 1, "one look, then no spinning on a readable socket"
    assert hooks.finished == [] and not greenlet.dead
    sub.offer(Delivery((1, 0), b"data: x\n\n"))
    gevent.sleep(0.05)
    assert chunks[-1] == b"data: x\n\n", "the stream still delivers"
    greenlet.kill()
    assert [reason for reason, _ in hooks.finished] == [CloseReason.CLIENT_GONE]
    client_side.close()
    server_side.close()


@pytest.mark.parametrize("destroyed", [False, True])
def test_finish_runs_even_if_stopping_the_watch_fails(monkeypatch, destroyed) -> None:
    server_side, client_side, _sub, hooks, greenlet, _chunks = start()
    if destroyed:
        def broken_close(self: Any) -> None:
            raise ValueError("operation on destroyed loop")
        monkeypatch.setattr(stream_module.PeerWatch, "close", broken_close)
    greenlet.kill()
    assert [reason for reason, _ in hooks.finished] == [CloseReason.CLIENT_GONE]
    client_side.close()
    server_side.close()
