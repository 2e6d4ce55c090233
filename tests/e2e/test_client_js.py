"""The browser helper (/v1/client.js) in real Chromium (Debian's, driven by
Playwright; no browser download), against the example legacy app
(examples/orders: Flask-Login sessions, notifier under /realtime) served by
real gunicorn with gevent workers and a real redis-server.

Each test opens pages of one browser context (one "browser": shared cookies,
localStorage, BroadcastChannel and Web Locks) and drives the helper with
``import()`` on a page of the host that does not use it itself (/login)."""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from notifier import Publisher

from ..support import tokens
from ..support.processes import ROOT, Gunicorn, RedisServer, wait_until

pytestmark = pytest.mark.browser

HELPER = "/realtime/v1/client.js"
# Each page keeps what its helper delivered in window.got, its status in window.status.
START = """async (options) => {
  const { connect } = await import("HELPER");
  window.got = []; window.resets = []; window.statuses = [];
  window.notifier = connect(options || {});
  window.notifier.on("*", (event) => window.got.push(event.data.message));
  window.notifier.on("reset", (detail) => window.resets.push(detail));
  window.notifier.on("status", (status) => window.statuses.push(status));
}""".replace("HELPER", HELPER)


@pytest.fixture(scope="module")
def redis_for_browser() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
def shop(redis_for_browser: RedisServer) -> Iterator[Gunicorn]:
    redis_for_browser.client().flushall()
    server = Gunicorn({"NOTIFIER_REDIS_URL": redis_for_browser.url, "NOTIFIER_JWT_SECRET": tokens.SECRET,
                       "NOTIFIER_HEARTBEAT_SECONDS": "1", "NOTIFIER_RETRY_MS": "200"}, workers=1,
                      app="examples.orders.app:app", config=ROOT / "tests" / "apps" / "host_gunicorn.py", ready_path="/realtime/readyz")
    server.redis_url = redis_for_browser.url  # type: ignore[attr-defined]
    try:
        server.start()
        publish(server, "an older event of somebody else's", user="nobody")  # not a brand-new deployment
        yield server
    finally:
        server.stop()


def signed_in(browser: Any, shop: Gunicorn, user: str = "alice", keep_page: bool = False) -> Any:
    """A browser context signed in to the shop. Its orders page runs the
    helper too (it would lead the tabs): closed unless ``keep_page``."""
    context = browser.new_context()
    page = context.new_page()
    if not keep_page:
        # The page closes at once; a stream it opened first would count in the
        # tests' connect totals (it sometimes did, before the close).
        page.route("**/v1/events*", lambda route: route.abort())
    page.goto(shop.url + "/login")
    page.fill("#user", user)
    page.click("#login button")
    page.wait_for_url(shop.url + "/")
    if not keep_page:
        page.close()
    return context


def helper_page(context: Any, shop: Gunicorn, options: dict[str, Any] | None = None) -> Any:
    page = context.new_page()
    page.goto(shop.url + "/login")
    page.evaluate(START, options or {})
    return page


def publish(shop: Gunicorn, *messages: str, user: str = "alice") -> None:
    with Publisher(shop.redis_url) as publisher:  # type: ignore[attr-defined]
        for message in messages:
            publisher.notify(user, message, type="order.shipped")


def metric(shop: Gunicorn, name: str) -> float:
    text = requests.get(shop.url + "/realtime/metrics", timeout=5).text
    match = re.search(rf"^{name}(?:\{{[^}}]*\}})? ([0-9.e+]+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def got(page: Any) -> list[str]:
    return page.evaluate("window.got")


def wait_for(page: Any, expected: list[str], timeout: float = 10) -> None:
    wait_until(lambda: got(page) == expected, timeout, message=f"{expected} in the page (has {got(page)})")


def status(page: Any) -> str:
    return page.evaluate("window.notifier.status")


def test_two_tabs_share_one_stream(browser, shop) -> None:
    context = signed_in(browser, shop)
    first, second = helper_page(context, shop), helper_page(context, shop)
    wait_until(lambda: status(first) == "open" and status(second) == "open", 10, message="both tabs open")
    assert {first.evaluate("window.notifier.role"), second.evaluate("window.notifier.role")} == {"leader", "follower"}
    assert metric(shop, "notifier_streams_open") == 1 and metric(shop, "notifier_stream_connects_total") == 1
    publish(shop, "one", "two", "three")
    wait_for(first, ["one", "two", "three"])
    wait_for(second, ["one", "two", "three"])
    assert metric(shop, "notifier_stream_connects_total") == 1, "the follower never opened a stream of its own"


def test_the_leader_closes_and_another_tab_takes_over_without_losing_an_event(browser, shop) -> None:
    context = signed_in(browser, shop)
    leader = helper_page(context, shop)
    wait_until(lambda: status(leader) == "open", 10, message="leader open")
    follower = helper_page(context, shop)
    wait_until(lambda: status(follower) == "open", 10, message="follower sees the leader's stream")
    publish(shop, "before")
    wait_for(follower, ["before"])
    # The leader tab leaves (pagehide: it rewinds its stored id over what it got in its last
    # moments, so the next leader replays "before": the follower must not show it twice).
    leader.goto("about:blank")
    publish(shop, "during 1", "during 2")  # while the lock moves and the new leader reconnects
    wait_until(lambda: follower.evaluate("window.notifier.role") == "leader", 10, message="leadership moved")
    publish(shop, "after")
    wait_for(follower, ["before", "during 1", "during 2", "after"])
    wait_until(lambda: metric(shop, "notifier_streams_open") == 1, 10, message="one stream again")


def test_post_redirect_reload_misses_nothing(browser, shop) -> None:
    """The example app's own page: alice marks her order shipped (a form post
    that publishes after the request, then redirects); the reloaded page
    resumes from the id the previous page stored and shows it."""
    context = signed_in(browser, shop, keep_page=True)
    page = context.pages[0]
    wait_until(lambda: page.evaluate("localStorage.length") > 0, 10, message="a stored position")
    page.click("#order-1 button")
    page.wait_for_url(shop.url + "/")
    page.locator("#news li").first.wait_for(timeout=10_000)
    assert page.locator("#news li").all_text_contents() == ["Your order 1 (Teapot) has shipped"]
    assert page.locator("#order-1 .state").text_content() == "shipped"


def test_reset_refetches_the_notifications(browser, shop) -> None:
    context = signed_in(browser, shop)
    publish(shop, "kept in history")
    page = context.new_page()
    page.goto(shop.url + "/login")
    # A stored id the server cannot resume from (newer than anything it assigned).
    page.evaluate("(key) => localStorage.setItem(key, '99999999999999-0')",
                  f"notifier:{shop.url}/realtime::last-id")
    page.evaluate(START, {})
    wait_until(lambda: page.evaluate("window.resets.length") == 1, 10, message="a reset")
    reset = page.evaluate("window.resets[0]")
    assert reset["reason"] == "unknown_id"
    assert [n["message"] for n in reset["notifications"]] == ["kept in history"]
    assert page.evaluate("window.notifier.lastEventId") == reset["resume_from"] != "99999999999999-0"
    publish(shop, "live after the reset")
    wait_for(page, ["live after the reset"])


def test_a_worker_killed_mid_stream_is_survived(browser, shop) -> None:
    context = signed_in(browser, shop)
    page = helper_page(context, shop)
    wait_until(lambda: status(page) == "open", 10, message="open")
    publish(shop, "first")
    wait_for(page, ["first"])
    [worker] = shop.worker_pids()
    os.kill(worker, signal.SIGKILL)
    publish(shop, "while the worker was dead")
    wait_until(lambda: shop.worker_pids() and shop.worker_pids() != [worker], 20, message="a new worker")
    wait_for(page, ["first", "while the worker was dead"], timeout=20)
    publish(shop, "after")
    wait_for(page, ["first", "while the worker was dead", "after"])
    statuses = page.evaluate("window.statuses")
    assert "waiting" in statuses and statuses[-1] == "open"


def test_the_helper_backs_off_with_jitter_and_honours_retry(browser, shop) -> None:
    context = signed_in(browser, shop)
    page = helper_page(context, shop)
    delays = page.evaluate("""async () => {
      const { backoff } = await import("HELPER");
      const fixed = (r) => () => r;
      return [backoff(200, 0), backoff(200, 1, fixed(0)), backoff(200, 1, fixed(1)), backoff(200, 20, fixed(1)),
              backoff(200, 20, fixed(0))];
    }""".replace("HELPER", HELPER))
    assert delays == [200, 200, 400, 30000, 15000]
    wait_until(lambda: status(page) == "open", 10, message="open")
    assert page.evaluate("window.notifier.retryMs") == 200, "the server's retry: was read"


def test_signed_out_is_told_and_not_retried_in_a_loop(browser, shop) -> None:
    context = browser.new_context()
    page = helper_page(context, shop)
    wait_until(lambda: status(page) == "unauthorized", 10, message="unauthorized")
    connects = metric(shop, "notifier_stream_rejections_total")
    time.sleep(1)
    assert metric(shop, "notifier_stream_rejections_total") == connects, "no retry loop against a 401"
