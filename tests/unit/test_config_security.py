"""Configuration that would open the service to others is refused at startup:
development mode on a public address, the example's placeholder secret, a
wildcard CORS origin, a key set that cannot be used."""

from __future__ import annotations

import base64
import json

import pytest

from notifier.config import Config, ConfigError

STRONG = "s" * 40


def dev(tmp_path, **env: str) -> dict[str, str]:
    return {"NOTIFIER_ENV": "development", "NOTIFIER_DEV_SECRET_FILE": str(tmp_path / "dev-secret"), **env}


@pytest.mark.parametrize("bind", ["0.0.0.0:8000", ":8000", "8000", "[::]:8000", "10.0.0.5:8000",
                                  "127.0.0.1:8000,0.0.0.0:9000", "example.com:8000", "fd://3"])
def test_development_mode_refuses_a_public_bind(tmp_path, bind) -> None:
    with pytest.raises(ConfigError, match="NOTIFIER_ENV=development listens on loopback only"):
        Config.from_env(dev(tmp_path, NOTIFIER_BIND=bind))


@pytest.mark.parametrize("bind", ["127.0.0.1:8000", "127.0.0.2:8000", "localhost:8000", "[::1]:8000",
                                  "unix:/tmp/notifier.sock", "127.0.0.1:8000,[::1]:8000"])
def test_development_mode_on_loopback_starts(tmp_path, bind) -> None:
    assert Config.from_env(dev(tmp_path, NOTIFIER_BIND=bind)).dev_mode


def test_production_may_bind_anywhere() -> None:
    config = Config.from_env({"NOTIFIER_ENV": "production", "NOTIFIER_JWT_SECRET": STRONG, "NOTIFIER_BIND": "0.0.0.0:8000"})
    assert not config.dev_mode


@pytest.mark.parametrize("env", ["development", "production"])
@pytest.mark.parametrize("secret", ["REPLACE_ME", "REPLACE_ME" + "x" * 60, "x" * 40 + "REPLACE_ME"])
def test_the_example_placeholder_secret_is_refused_in_every_mode(tmp_path, env, secret) -> None:
    with pytest.raises(ConfigError, match=r"placeholder \(REPLACE_ME\)"):
        Config.from_env(dev(tmp_path, NOTIFIER_ENV=env, NOTIFIER_JWT_SECRET=secret))


def test_cors_origins_are_exact_and_never_a_wildcard() -> None:
    base = {"NOTIFIER_JWT_SECRET": STRONG, "NOTIFIER_ENV": "production"}
    config = Config.from_env(dict(base, NOTIFIER_CORS_ORIGINS="https://app.example.com, http://localhost:3000/"))
    assert config.cors_origins == ("https://app.example.com", "http://localhost:3000")
    assert Config.from_env(base).cors_origins == ()
    for bad in ("*", "https://*.example.com", "app.example.com", "https://app.example.com/path"):
        with pytest.raises(ConfigError, match="NOTIFIER_CORS_ORIGINS"):
            Config.from_env(dict(base, NOTIFIER_CORS_ORIGINS=bad))


def test_publish_rate_settings() -> None:
    base = {"NOTIFIER_JWT_SECRET": STRONG, "NOTIFIER_ENV": "production"}
    assert Config.from_env(base).publish_rate == 1000 and Config.from_env(base).publish_burst == 2000
    config = Config.from_env(dict(base, NOTIFIER_PUBLISH_RATE="0.5", NOTIFIER_PUBLISH_BURST="3"))
    assert (config.publish_rate, config.publish_burst) == (0.5, 3)
    with pytest.raises(ConfigError) as refused:
        Config.from_env(dict(base, NOTIFIER_PUBLISH_RATE="-1", NOTIFIER_PUBLISH_BURST="0"))
    assert "NOTIFIER_PUBLISH_RATE" in str(refused.value) and "NOTIFIER_PUBLISH_BURST" in str(refused.value)


def oct_key(kid: str, secret: bytes) -> dict[str, str]:
    return {"kty": "oct", "kid": kid, "k": base64.urlsafe_b64encode(secret).rstrip(b"=").decode()}


def test_a_jwks_file_replaces_the_secret(tmp_path) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [oct_key("new", b"n" * 40), oct_key("old", b"o" * 40)]}))
    config = Config.from_env({"NOTIFIER_ENV": "production", "NOTIFIER_JWT_JWKS_FILE": str(path)})
    assert config.jwt_jwks and config.jwt_secret is None
    assert "nnnn" not in repr(config) and "jwt_jwks='***'" in repr(config)


@pytest.mark.parametrize("keys, problem", [
    ("not json", "must be a JSON Web Key Set"),
    ({"keys": []}, "must be a JSON Web Key Set"),
    ({"keys": [oct_key("a", b"a" * 40), oct_key("a", b"b" * 40)]}, "its own non-empty kid"),
    ({"keys": [{"kty": "oct", "k": "eHh4"}]}, "its own non-empty kid"),
    ({"keys": [oct_key("short", b"s" * 8)]}, "too weak"),
    ({"keys": [{"kty": "RSA", "kid": "r", "n": "AQAB", "e": "AQAB"}]}, "must be kty oct"),
    ({"keys": [{"kty": "oct", "kid": "p", "k": "REPLACE_ME"}]}, "placeholder"),
])
def test_a_bad_jwks_file_is_refused_with_the_reason(tmp_path, keys, problem) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(keys if isinstance(keys, str) else json.dumps(keys))
    with pytest.raises(ConfigError, match=problem):
        Config.from_env({"NOTIFIER_ENV": "production", "NOTIFIER_JWT_JWKS_FILE": str(path)})


def test_a_jwks_file_next_to_a_secret_is_ambiguous(tmp_path) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [oct_key("a", b"a" * 40)]}))
    with pytest.raises(ConfigError, match="replaces NOTIFIER_JWT_SECRET"):
        Config.from_env({"NOTIFIER_ENV": "production", "NOTIFIER_JWT_JWKS_FILE": str(path), "NOTIFIER_JWT_SECRET": STRONG})
