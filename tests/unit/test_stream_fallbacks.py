"""stream.py on runtime/'s public fallbacks: without gevent's readability
watcher a gone client is noticed by the heartbeat's peek, and without
gunicorn's socket in the environ a stream simply has no socket to look at."""

from __future__ import annotations

import subprocess
import sys
import time

import gevent
import gevent.socket
import pytest

from notifier import stream as stream_module
from notifier.hub import CloseReason, Subscription
from notifier.runtime import gevent as gevent_runtime
from notifier.runtime import gunicorn as gunicorn_runtime
from notifier.stream import StreamPlan, client_socket, event_stream

from .test_stream_watch import Hooks


def test_without_a_watcher_the_heartbeat_notices_a_gone_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stream_module, "watch_readable", gevent_runtime.public_watch_readable)
    server_side, client_side = gevent.socket.socketpair()
    hooks = Hooks()
    plan = StreamPlan(Subscription("u", ["c"], 16), heartbeat=0.3, deadline=time.monotonic() + 60,
                      deadline_reason="deadline", retry_ms=1000, raw_socket=gevent_runtime.os_socket(server_side))
    chunks: list[bytes] = []
    greenlet = gevent.spawn(lambda: chunks.extend(event_stream(plan, hooks)))
    try:
        gevent.sleep(0.05)
        client_side.close()
        greenlet.join(timeout=5)
        assert [reason for reason, _ in hooks.finished] == [CloseReason.CLIENT_GONE]
        assert len(chunks) == 1, "no heartbeat written to a gone client"
    finally:
        server_side.close()


def test_the_client_socket_comes_from_gunicorn_only_in_range(monkeypatch: pytest.MonkeyPatch) -> None:
    left, right = gevent.socket.socketpair()
    try:
        environ = {"gunicorn.socket": left}
        assert client_socket(environ) is gevent_runtime.os_socket(left)
        assert client_socket({}) is None
        monkeypatch.setattr(gunicorn_runtime, "ACTIVE", False)
        assert client_socket(environ) is None
        assert not gunicorn_runtime.worker_stopping(type("Worker", (), {"alive": False})())
    finally:
        left.close()
        right.close()


@pytest.mark.parametrize("active", [True, False])
def test_the_write_patch_is_installed_only_in_range(active: bool) -> None:
    # In a child process: patching gunicorn's Response here would outlive the test.
    code = ("from notifier.runtime import gunicorn as g\n"
            f"g.ACTIVE = {active}\n"
            "print(g.install_writes(), g.writes_installed())")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.split() == [str(active), str(active)]
