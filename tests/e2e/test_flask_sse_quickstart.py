"""flask-sse's own quickstart app (tests/apps/flask_sse_quickstart: its
documentation's ``sse.py`` and ``index.html``, with ``from
notifier.compat.flask_sse import sse`` as the one change) under plain gunicorn
with gevent workers, as the quickstart runs it, a real redis-server and real
Chromium (Debian's, driven by Playwright; no browser download).

The page's own JavaScript (``new EventSource(url_for('sse.stream'))``, an
``alert`` on ``greeting``) is what is checked: the alerts it shows."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from notifier import Publisher

from ..support.processes import ROOT, Gunicorn, RedisServer, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

GREETING = "The server says Hello!"
FAILED = "Failed to connect to event stream. Is Redis running?"
WORKERS = 2


@pytest.fixture(scope="module")
def quickstart() -> Iterator[Gunicorn]:
    redis_server = RedisServer().start()
    server = Gunicorn({"NOTIFIER_REDIS_URL": redis_server.url, "NOTIFIER_HEARTBEAT_SECONDS": "1"},
                      workers=WORKERS, app="tests.apps.flask_sse_quickstart.sse:app",
                      config=ROOT / "tests" / "apps" / "plain_gunicorn.py", ready_path="/")
    # The quickstart's command line: gunicorn sse:app --worker-class gevent --bind ... (two workers here).
    server.env["GUNICORN_CMD_ARGS"] = f"--worker-class gevent --bind 127.0.0.1:{server.port} --workers {WORKERS}"
    server.redis = redis_server  # type: ignore[attr-defined]
    try:
        server.start()
        yield server
    finally:
        server.stop()
        redis_server.stop()


def open_index(context: Any, server: Gunicorn) -> tuple[Any, list[str]]:
    """The quickstart's page, its alerts recorded (and dismissed), once its EventSource is open."""
    page = context.new_page()
    alerts: list[str] = []

    def on_dialog(dialog: Any) -> None:
        alerts.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    page.goto(server.url + "/")
    wait_for(page, lambda: page.evaluate("source.readyState") == 1, "the page's EventSource is open")
    return page, alerts


def wait_for(page: Any, predicate: Any, message: str, timeout: float = 15) -> None:
    """Poll, letting Playwright dispatch the page's dialogs between tries."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:  # bounded in time
        if predicate():
            return
        page.wait_for_timeout(100)
    raise AssertionError(f"timed out: {message}")


def pubsub_connections(server: Gunicorn) -> int:
    clients = server.redis.client().client_list()  # type: ignore[attr-defined]
    return sum(1 for client in clients if int(client.get("sub", 0)) or int(client.get("ssub", 0)))


def test_the_quickstart_page_alerts_the_greeting_sent_from_another_tab(quickstart: Gunicorn, browser: Any) -> None:
    context = browser.new_context()
    tabs = [open_index(context, quickstart) for _ in range(3)]
    assert 1 <= pubsub_connections(quickstart) <= WORKERS, "one Redis pub/sub connection per worker, not per client"

    hello = context.new_page()  # "Open another tab, and visit 127.0.0.1:8000/hello"
    hello.goto(quickstart.url + "/hello")
    assert hello.inner_text("body") == "Message sent!"
    for page, alerts in tabs:
        wait_for(page, lambda alerts=alerts: GREETING in alerts, f"{GREETING!r} in every tab")
        assert alerts == [GREETING], "exactly the greeting: no error, no duplicate"
    context.close()


def test_a_page_whose_worker_died_replays_what_it_missed(quickstart: Gunicorn, browser: Any) -> None:
    """EventSource reconnects with Last-Event-ID (flask-sse ignored it): an
    event published while no worker held the stream comes from the history."""
    context = browser.new_context()
    page, alerts = open_index(context, quickstart)
    assert requests.get(quickstart.url + "/hello", timeout=5).text == "Message sent!"
    wait_for(page, lambda: alerts == [GREETING], "the first greeting")

    old = set(quickstart.worker_pids())
    for pid in old:
        os.kill(pid, signal.SIGKILL)  # every stream ends; no subscriber is left anywhere
    # Published from another process, straight into Redis (notifier's Publisher; the
    # compat's channel "sse" is notifier's topic "sse:sse"), while the page waits to reconnect.
    with Publisher(quickstart.redis.url) as publisher:  # type: ignore[attr-defined]
        publisher.publish_topic("sse:sse", '{"message": "you were away"}', type="greeting")
    wait_until(lambda: len(set(quickstart.worker_pids()) - old) == WORKERS, 20, message="workers replaced")

    wait_for(page, lambda: "The server says you were away" in alerts, "the missed greeting, replayed", timeout=20)
    assert alerts.count(GREETING) == 1, "what the page had seen is not replayed again"
    context.close()
