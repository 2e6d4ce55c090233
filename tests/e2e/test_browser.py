"""A real browser: Debian's headless Chromium, driven by Playwright (no
browser download), logs in with a cookie, opens the dev page's EventSource
and shows a notification published over HTTP."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from ..support import tokens
from ..support.processes import Gunicorn

pytestmark = pytest.mark.browser

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium_path() -> str:
    path = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if path is None:
        raise RuntimeError("chromium is not installed: apt-get install -y chromium (the test never skips)")
    return path


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


def test_browser_sees_a_published_notification(dev_server: Gunicorn) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
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
        finally:
            browser.close()
