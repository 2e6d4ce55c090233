"""Configuration is validated once, lists every problem, never prints secrets."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from notifier.config import Config, ConfigError

from ..support.processes import ROOT

STRONG = "s" * 40


def test_zero_config_is_development_with_a_kept_dev_secret(tmp_path) -> None:
    path = tmp_path / "dev-secret"
    first = Config.from_env({"NOTIFIER_DEV_SECRET_FILE": str(path)})
    second = Config.from_env({"NOTIFIER_DEV_SECRET_FILE": str(path)})
    assert first.dev_mode and first.redis_url is None
    assert first.jwt_secret and first.jwt_secret == second.jwt_secret, "service and CLI must agree"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert first.jwt_cookie_secure is False


def test_deployment_settings_default_to_production() -> None:
    config = Config.from_env({"NOTIFIER_REDIS_URL": "redis://r:6379/0", "NOTIFIER_JWT_SECRET": STRONG})
    assert config.env == "production" and config.jwt_cookie_secure is True
    assert config.heartbeat_seconds == 15


def test_every_problem_is_listed_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        Config.from_env({
            "NOTIFIER_ENV": "production",
            "NOTIFIER_REDIS_URL": "http://nope",
            "NOTIFIER_HEARTBEAT_SECONDS": "soon",
            "NOTIFIER_QUEUE_SIZE": "0",
            "NOTIFIER_JWT_COOKIE_SECURE": "maybe",
            "NOTIFIER_LOG_LEVEL": "LOUD",
        })
    text = str(caught.value)
    for expected in ("NOTIFIER_JWT_SECRET is required", "NOTIFIER_REDIS_URL", "NOTIFIER_HEARTBEAT_SECONDS",
                     "NOTIFIER_QUEUE_SIZE", "NOTIFIER_JWT_COOKIE_SECURE", "NOTIFIER_LOG_LEVEL"):
        assert expected in text
    assert len(caught.value.problems) == 6


def test_weak_secret_refused_outside_dev_and_never_printed() -> None:
    weak = "short-secret-123"
    with pytest.raises(ConfigError) as caught:
        Config.from_env({"NOTIFIER_ENV": "production", "NOTIFIER_JWT_SECRET": weak})
    assert "too weak" in str(caught.value) and weak not in str(caught.value)
    assert Config.from_env({"NOTIFIER_ENV": "development", "NOTIFIER_JWT_SECRET": weak}).jwt_secret == weak


def test_repr_masks_secrets_and_redis_password() -> None:
    config = Config.from_env({"NOTIFIER_JWT_SECRET": STRONG, "NOTIFIER_REDIS_URL": "redis://:hunter2hunter2@r:6379/0"})
    text = repr(config)
    assert STRONG not in text and "hunter2" not in text and "***" in text


def test_key_algorithms_need_a_readable_key(tmp_path) -> None:
    with pytest.raises(ConfigError) as caught:
        Config.from_env({"NOTIFIER_ENV": "production", "NOTIFIER_JWT_ALGORITHM": "RS256",
                         "NOTIFIER_JWT_PUBLIC_KEY_FILE": str(tmp_path / "missing.pem")})
    assert "cannot read" in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        Config.from_env({"NOTIFIER_ENV": "production", "NOTIFIER_JWT_ALGORITHM": "none", "NOTIFIER_JWT_SECRET": STRONG})
    assert "NOTIFIER_JWT_ALGORITHM must be one of" in str(caught.value)


def test_gunicorn_refuses_bad_config_with_a_clear_error_and_nonzero_exit() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFIER_")}
    env.update({"NOTIFIER_ENV": "production", "NOTIFIER_JWT_SECRET": "weak-secret-value", "NOTIFIER_QUEUE_SIZE": "-1",
                "NOTIFIER_BIND": "127.0.0.1:0"})
    result = subprocess.run([sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py"), "wsgi:app"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "too weak" in result.stderr and "NOTIFIER_QUEUE_SIZE" in result.stderr
    assert "weak-secret-value" not in result.stderr + result.stdout


def test_the_limits_of_issue_12_are_validated_and_the_worker_cap_follows_worker_connections() -> None:
    base = {"NOTIFIER_JWT_SECRET": "s" * 40, "NOTIFIER_ENV": "production"}
    assert Config.from_env(base).max_streams_per_worker == 9000
    assert Config.from_env({**base, "NOTIFIER_WORKER_CONNECTIONS": "50"}).max_streams_per_worker == 45
    assert Config.from_env({**base, "NOTIFIER_WORKER_CONNECTIONS": "20"}).max_streams_per_worker == 15
    assert Config.from_env({**base, "NOTIFIER_MAX_STREAMS_PER_WORKER": "7"}).max_streams_per_worker == 7
    with pytest.raises(ConfigError) as error:
        Config.from_env({**base, "NOTIFIER_MAX_DATA_DEPTH": "1000", "NOTIFIER_QUEUE_BYTES": "10",
                         "NOTIFIER_MAX_STREAMS_PER_USER": "0", "NOTIFIER_WRITE_TIMEOUT_SECONDS": "x",
                         "NOTIFIER_PAGE_MAX_BYTES": "1", "NOTIFIER_REPLAY_MAX_BYTES": "-1",
                         "NOTIFIER_STREAM_LEASE_SECONDS": "1"})
    assert len(error.value.problems) == 7, error.value.problems


def test_a_host_s_redis_url_is_used_and_validated_when_the_environment_sets_none(tmp_path) -> None:
    """compat.flask_sse: SSE_REDIS_URL / REDIS_URL from the app's config; its streams verify no token."""
    secret_file = tmp_path / "dev-secret"
    config = Config.from_env({"NOTIFIER_DEV_SECRET_FILE": str(secret_file)},
                             host_redis_url=("REDIS_URL", "redis://cache:6379/2"), needs_keys=False)
    assert config.redis_url == "redis://cache:6379/2"
    assert config.env == "production" and config.jwt_secret is None, "no key required for anonymous streams"
    assert not secret_file.exists(), "and no development secret made"
    from_env = Config.from_env({"NOTIFIER_REDIS_URL": "redis://env:6379/0"},
                               host_redis_url=("REDIS_URL", "redis://cache:6379/2"), needs_keys=False)
    assert from_env.redis_url == "redis://env:6379/0", "the deployment's setting wins over the code's"
    with pytest.raises(ConfigError) as bad:
        Config.from_env({}, host_redis_url=("SSE_REDIS_URL", "http://cache:6379"), needs_keys=False)
    assert "SSE_REDIS_URL must start with redis://" in str(bad.value) and "NOTIFIER_REDIS_URL" not in str(bad.value)
    with pytest.raises(ConfigError, match="NOTIFIER_JWT_SECRET is required"):
        Config.from_env({}, host_redis_url=("REDIS_URL", "redis://cache:6379/2"))
    weak = {"NOTIFIER_JWT_SECRET": "short"}
    with pytest.raises(ConfigError, match="too weak"):
        Config.from_env(weak, host_redis_url=("REDIS_URL", "redis://cache:6379/2"), needs_keys=False)
