"""A real browser: Debian's headless Chromium, driven by Playwright (no
browser download), logs in with a cookie, opens the dev page's EventSource
and shows a notification published over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from ..support import tokens
from ..support.processes import Gunicorn

pytestmark = pytest.mark.browser

@pytest.fixture(scope="module")
def dev_server(tmp_path_factory) -> Iterator[Gunicorn]:
    """Zero configuration, as `make run` starts it: development mode with its
    generated local secret (kept in a file we point it at)."""
    secret_file = tmp_path_factory.mktemp("dev") / "dev-secret"
    server = Gunicorn({"NOTIFIER_DEV_SECRET_FILE": str(secret_file), "NOTIFIER_HEARTBEAT_SECONDS": "1"}, workers=1)
    try:
        server.start()
        server.secret = secret_file.read_text().strip()  # type: ignore[attr-defined]
        yield server
    finally:
        server.stop()


def test_browser_sees_a_published_notification(dev_server: Gunicorn, browser: Any) -> None:
    from playwright.sync_api import expect

    page = browser.new_page()
    page.goto(dev_server.url + "/")
    page.fill("#user", "alice")
    page.click("#login button")
    expect(page.locator("#status")).to_have_text("open", timeout=10_000)

    cookies = {c["name"]: c for c in page.context.cookies()}
    assert cookies["notifier_access"]["httpOnly"] is True
    assert page.evaluate("document.cookie").find("notifier_access") == -1, "not readable from JS"

    response = requests.post(
        dev_server.url + "/v1/publish",
        json={"user_id": "alice", "message": "Your order has shipped! <b>not bold</b>", "data": {"order": 42}},
        headers=tokens.bearer(tokens.publisher(secret=dev_server.secret)), timeout=5)
    assert response.status_code == 202
    requests.post(dev_server.url + "/v1/publish", json={"user_id": "bob", "message": "for bob"},
                  headers=tokens.bearer(tokens.publisher(secret=dev_server.secret)), timeout=5)
    item = page.locator("#notifications .notification .message").first
    expect(item).to_have_text("Your order has shipped! <b>not bold</b>", timeout=10_000)
    assert page.locator("#notifications b").count() == 0, "payloads are shown as text, never HTML"
    page.wait_for_timeout(300)
    assert page.locator("#notifications .notification").count() == 1, "bob's notification is not shown"


def test_the_dev_page_shows_any_event_type_and_keeps_what_it_sent(dev_server: Gunicorn, browser: Any) -> None:
    """The dev page streams with /v1/client.js, shows every event type (not only
    ``notification``) and sends with fetch(): no reload, the sent message stays."""
    from playwright.sync_api import expect

    page = browser.new_page()
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(dev_server.url + "/")
    expect(page.locator("#status")).to_have_text("unauthorized (log in)", timeout=10_000)
    page.evaluate("window.sameDocument = true")  # gone if anything reloads the page
    page.fill("#user", "carol")
    page.click("#login button")
    expect(page.locator("#status")).to_have_text("open", timeout=10_000)

    page.fill("#send-type", "order.shipped")
    page.fill("#send-message", "Your order has shipped!")
    page.fill("#send-data", '{"order": 42}')
    page.click("#send button")
    shipped = page.locator('#notifications .notification[data-type="order.shipped"]')
    expect(shipped.locator(".message")).to_have_text("Your order has shipped!", timeout=10_000)
    expect(shipped.locator(".data")).to_have_text('{"order":42}')
    sent = page.locator("#sent .sent")
    expect(sent.locator(".message")).to_have_text("Your order has shipped!")
    assert sent.get_attribute("data-id") == shipped.get_attribute("data-id"), "the event it sent"
    assert page.evaluate("window.sameDocument") is True, "sent without a reload"

    # Another type, from a publisher over HTTP: shown as well.
    response = requests.post(
        dev_server.url + "/v1/publish", json={"user_id": "carol", "type": "invoice.paid", "message": "Paid"},
        headers=tokens.bearer(tokens.publisher(secret=dev_server.secret)), timeout=5)
    assert response.status_code == 202
    paid = page.locator('#notifications .notification[data-type="invoice.paid"] .message')
    expect(paid).to_have_text("Paid", timeout=10_000)
    assert page.evaluate("window.sameDocument") is True
    assert any(url.endswith("/v1/client.js") for url in requested), "the page uses the browser helper"

    page.reload()  # what it sent stays listed (and what it received is listed again)
    expect(page.locator("#sent .sent .message")).to_have_text("Your order has shipped!", timeout=10_000)
    expect(page.locator('#notifications .notification[data-type="order.shipped"] .message')).to_have_text(
        "Your order has shipped!", timeout=10_000)
