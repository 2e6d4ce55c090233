"""The OpenAPI document is the truth: a property-based run of schemathesis
against the real service (gunicorn, 2 gevent workers, a real redis-server).
Every documented operation, generated inputs, bounded examples: no 5xx, and
every status, content type, header and body as documented."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks

from notifier.api.openapi import document
from notifier.validation import Limits

from ..support import tokens
from ..support.processes import Gunicorn, redis_and_gunicorn

pytestmark = pytest.mark.e2e

EXAMPLES = 15  # per operation: the whole run stays well under a minute (streams last up to 1 s each)


@pytest.fixture(scope="module")
def server() -> Iterator[Gunicorn]:
    # A generated request that opens a stream must end: a stream lasts at most MAX_STREAM_SECONDS.
    with redis_and_gunicorn({"NOTIFIER_HEARTBEAT_SECONDS": "0.2", "NOTIFIER_MAX_STREAM_SECONDS": "1"}) as (gunicorn, _):
        yield gunicorn


def test_the_served_document_is_the_one_tested(server) -> None:
    served = requests.get(server.url + "/openapi.json", timeout=5)
    assert served.status_code == 200 and served.headers["X-Content-Type-Options"] == "nosniff"
    assert served.json() == document(Limits())


schema = schemathesis.openapi.from_dict(document(Limits()))

CHECKS = [checks.not_a_server_error, checks.status_code_conformance, checks.content_type_conformance,
          checks.response_headers_conformance, checks.response_schema_conformance]


def credentials(path: str) -> dict[str, str]:
    """A valid credential of the kind each operation takes; the inputs vary, the credential does not."""
    if path == "/v1/publish":
        return tokens.bearer(tokens.publisher("schemathesis"))
    return tokens.bearer(tokens.token("alice", topics=["orders:*", "news"]))


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_every_operation_behaves_as_documented(case, server) -> None:
    started = time.monotonic()
    case.call_and_validate(base_url=server.url, headers=credentials(case.path), checks=CHECKS, timeout=10)
    assert time.monotonic() - started < 5
