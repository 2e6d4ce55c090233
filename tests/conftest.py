"""Shared fixtures. The pytest process itself is never gevent-patched: gevent
behaviour is tested through real gunicorn subprocesses."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from notifier import create_app

from .support.config import make_config
from .support.processes import RedisServer


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One throwaway redis-server for the session (tests that kill Redis start their own)."""
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster():
    """One 3-master Redis Cluster for the session (tests that change its
    topology start their own)."""
    from bench.topologies import Cluster

    cluster = Cluster(masters=3).start()
    yield cluster
    cluster.stop()


@pytest.fixture
def prefix() -> str:
    """A unique key prefix per test, so tests sharing a Redis never see each other."""
    return f"t{uuid.uuid4().hex[:10]}:"


@pytest.fixture
def app():
    application = create_app(make_config())
    yield application
    application.extensions["notifier"].stop()


@pytest.fixture
def client(app):
    return app.test_client()
