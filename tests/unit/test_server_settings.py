"""notifier.config owns every variable, gunicorn's included: ServerSettings
validates them once and lists every problem; gunicorn.conf.py only maps them
and calls notifier.server's hooks; nothing else in notifier reads the
environment."""

from __future__ import annotations

import ast
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import pytest

from notifier.config import ConfigError, ServerSettings

from ..support import tokens
from ..support.processes import ROOT

REDIS = {"NOTIFIER_REDIS_URL": "redis://127.0.0.1:1"}


def test_defaults() -> None:
    settings = ServerSettings.from_env(REDIS)
    assert settings.bind == ("127.0.0.1:8000",)
    assert settings.workers == multiprocessing.cpu_count()
    assert settings.worker_connections == 10000 and settings.drain_seconds == 10.0
    assert settings.graceful_timeout == 20 and settings.log_level == "INFO"
    assert settings.metrics_dir is None and settings.notes == ()


@pytest.mark.parametrize("bind", ["0.0.0.0:8000", "localhost", "[::1]:8000", "[::]", "unix:/tmp/n.sock", "fd://3",
                                  "127.0.0.1:8000, 127.0.0.1:8001"])
def test_every_gunicorn_address_form_is_accepted(bind: str) -> None:
    settings = ServerSettings.from_env({**REDIS, "NOTIFIER_BIND": bind})
    assert ",".join(settings.bind) == bind.replace(" ", "")


@pytest.mark.parametrize("bind", ["127.0.0.1:http", "127.0.0.1:70000", "::1:8000", "unix:", "fd://x", "[::1]8000",
                                  ":8000", "host name:80", ","])
def test_a_bad_address_is_refused(bind: str) -> None:
    with pytest.raises(ConfigError, match="NOTIFIER_BIND"):
        ServerSettings.from_env({**REDIS, "NOTIFIER_BIND": bind})


def test_workers_come_from_notifier_workers_then_web_concurrency() -> None:
    assert ServerSettings.from_env({**REDIS, "WEB_CONCURRENCY": "3"}).workers == 3
    assert ServerSettings.from_env({**REDIS, "WEB_CONCURRENCY": "3", "NOTIFIER_WORKERS": "5"}).workers == 5


def test_the_embedded_broker_runs_in_one_worker_and_says_so() -> None:
    settings = ServerSettings.from_env({"NOTIFIER_WORKERS": "4"})
    assert settings.workers == 1 and settings.embedded_broker
    assert settings.notes == ("no NOTIFIER_REDIS_URL, so the embedded broker runs in a single worker",)


def test_every_problem_is_listed_in_one_error() -> None:
    with pytest.raises(ConfigError) as caught:
        ServerSettings.from_env({**REDIS, "NOTIFIER_BIND": "nowhere:port", "NOTIFIER_WORKERS": "0",
                                 "WEB_CONCURRENCY": "x", "NOTIFIER_WORKER_CONNECTIONS": "-1",
                                 "NOTIFIER_DRAIN_SECONDS": "soon", "NOTIFIER_LOG_LEVEL": "loud"})
    text = str(caught.value)
    for name in ("NOTIFIER_BIND", "NOTIFIER_WORKERS", "NOTIFIER_WORKER_CONNECTIONS", "NOTIFIER_DRAIN_SECONDS",
                 "NOTIFIER_LOG_LEVEL"):
        assert name in text
    assert len(caught.value.problems) == 5
    with pytest.raises(ConfigError, match="WEB_CONCURRENCY must be a whole number"):
        ServerSettings.from_env({**REDIS, "WEB_CONCURRENCY": "x"})


def test_gunicorn_lists_server_and_app_problems_together_and_exits_2() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFIER_")}
    env.update({"NOTIFIER_ENV": "production", "NOTIFIER_JWT_SECRET": "weak-secret-value",
                "NOTIFIER_BIND": "127.0.0.1:99999", "NOTIFIER_WORKERS": "0", **REDIS})
    result = subprocess.run([sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py"), "wsgi:app"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    for problem in ("NOTIFIER_BIND", "NOTIFIER_WORKERS", "too weak"):
        assert problem in result.stderr, result.stderr
    assert "weak-secret-value" not in result.stderr + result.stdout


ENVIRONMENT_NAMES = {"environ", "environb", "getenv", "getenvb", "putenv", "unsetenv"}


def environment_reads(path: str) -> list[int]:
    """Lines that touch the environment: read or write os.environ, os.getenv, os.putenv..."""
    tree = ast.parse(Path(path).read_text())
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "os":
            lines += [node.lineno for alias in node.names if alias.name in ENVIRONMENT_NAMES]
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "os" \
                and node.attr in ENVIRONMENT_NAMES:
            lines.append(node.lineno)
    return lines


def test_only_config_reads_or_writes_the_environment() -> None:
    readers = {}
    for path in sorted((ROOT / "notifier").rglob("*.py")):
        found = environment_reads(str(path))
        if found and path.parent.name != "config":
            readers[str(path.relative_to(ROOT))] = found
    assert readers == {}
    assert environment_reads(str(ROOT / "gunicorn.conf.py")) == []


def test_gunicorn_conf_is_a_few_dozen_lines_of_settings_and_hooks() -> None:
    text = (ROOT / "gunicorn.conf.py").read_text()
    assert len(text.splitlines()) <= 50
    for hook in ("on_starting", "post_worker_init", "child_exit", "on_exit"):
        assert f"{hook} = server.{hook}" in text


def test_auth_errors_are_mapped_by_class(client) -> None:  # type: ignore[no-untyped-def]
    missing = client.get("/v1/events")
    assert missing.status_code == 401 and missing.get_json()["error"]["message"].startswith("missing token")
    refresh = client.get("/v1/events", headers=tokens.bearer(tokens.token("alice", token_type="refresh")))
    assert refresh.status_code == 401
    assert refresh.get_json()["error"]["message"] == "a refresh token cannot be used here; send an access token"
