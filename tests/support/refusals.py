"""GETs that expect an error answer (JSON) from an endpoint that can also answer
with an event stream.

An event stream's body never ends by itself (heartbeats until the token
expires), and each heartbeat resets a read timeout. So a bug that turns a
refusal into a 200 stream must fail the test at once: the body of a stream is
never read, not even to build a failure message.
"""

from __future__ import annotations

from typing import Any

import requests


def get_refusal(url: str, **kwargs: Any) -> requests.Response:
    """``requests.get`` that fails at once on an event-stream answer instead of
    reading it; any other answer is read whole and returned as usual."""
    response = requests.get(url, stream=True, **kwargs)
    content_type = response.headers.get("Content-Type", "")
    if content_type.startswith("text/event-stream"):
        response.close()
        raise AssertionError(f"GET {url}: expected an error, got a {response.status_code} event stream (body not read)")
    _ = response.content  # a finite body: read it, so .json() and .text work and the connection is released
    return response
