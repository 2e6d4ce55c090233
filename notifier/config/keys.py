"""The JWT keys a configuration names: one HMAC secret, one public key, or a
key set (JWKS) for rotation; and the development secret kept on disk."""

from __future__ import annotations

import json
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .reader import Reader

log = logging.getLogger("notifier.config")

MIN_SECRET_BYTES = 32


HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")


KEY_ALGORITHMS = ("RS256", "RS384", "RS512", "ES256", "ES384", "ES512")


# The placeholder of k8s/overlays/example/secret.example.yaml: a deployment
# that still carries it was never given its real secret.
PLACEHOLDER = "REPLACE_ME"


# The key type (JWK "kty") each algorithm family verifies with.
JWK_TYPES = {"HS": "oct", "RS": "RSA", "ES": "EC"}


@dataclass(frozen=True)
class Keys:
    secret: str | None = None
    public_key: str | None = None
    private_key: str | None = None
    jwks: str | None = None
    dev_secret: bool = False  # the generated development secret (the dev page may mint with it)


def read_keys(reader: Reader, algorithm: str, secret: str | None, dev: bool) -> Keys:
    """The verification (and signing) keys: one HMAC secret, one public key, or a JWKS of several."""
    public_key_file = reader.text("JWT_PUBLIC_KEY_FILE")
    private_key_file = reader.text("JWT_PRIVATE_KEY_FILE")
    jwks_file = reader.text("JWT_JWKS_FILE")
    if algorithm not in HMAC_ALGORITHMS + KEY_ALGORITHMS:
        reader.problem(f"NOTIFIER_JWT_ALGORITHM must be one of {', '.join(HMAC_ALGORITHMS + KEY_ALGORITHMS)}")
        return Keys()
    if algorithm in KEY_ALGORITHMS:
        try:
            import cryptography  # noqa: F401
        except ImportError:
            reader.problem(f"NOTIFIER_JWT_ALGORITHM={algorithm} needs the 'cryptography' package (pip install cryptography)")
    private_key = reader.file("JWT_PRIVATE_KEY_FILE", private_key_file) if private_key_file else None
    if jwks_file:
        if secret or public_key_file:
            reader.problem("NOTIFIER_JWT_JWKS_FILE replaces NOTIFIER_JWT_SECRET and NOTIFIER_JWT_PUBLIC_KEY_FILE; give only the key set")
        return Keys(private_key=private_key, jwks=_read_jwks(reader, jwks_file, algorithm))
    if algorithm in KEY_ALGORITHMS:
        if secret:
            reader.problem(f"NOTIFIER_JWT_SECRET is set but NOTIFIER_JWT_ALGORITHM is {algorithm}; give NOTIFIER_JWT_PUBLIC_KEY_FILE instead")
        if not public_key_file:
            reader.problem(f"NOTIFIER_JWT_PUBLIC_KEY_FILE (or NOTIFIER_JWT_JWKS_FILE) is required with NOTIFIER_JWT_ALGORITHM={algorithm}")
            return Keys(private_key=private_key)
        return Keys(public_key=reader.file("JWT_PUBLIC_KEY_FILE", public_key_file), private_key=private_key)
    if public_key_file:
        reader.problem(f"NOTIFIER_JWT_PUBLIC_KEY_FILE is set but NOTIFIER_JWT_ALGORITHM is {algorithm}; use RS256/ES256 with a key")
    generated = secret is None and dev
    if generated:
        secret = load_dev_secret(reader.text("DEV_SECRET_FILE"))
    _check_secret(reader, secret, algorithm, dev)
    return Keys(secret=secret, dev_secret=generated)


def _check_secret(reader: Reader, secret: str | None, algorithm: str, dev: bool) -> None:
    needed = _min_secret_bytes(algorithm)
    if secret is None:
        reader.problem("NOTIFIER_JWT_SECRET is required (or NOTIFIER_JWT_PUBLIC_KEY_FILE with NOTIFIER_JWT_ALGORITHM=RS256/ES256)")
    elif PLACEHOLDER in secret:
        # Refused in every mode: it is public, so whoever reads the example can sign tokens.
        reader.problem(f"NOTIFIER_JWT_SECRET is the example's placeholder ({PLACEHOLDER}); set a real secret")
    elif len(secret.encode("utf-8")) < needed:
        if dev:
            log.warning("NOTIFIER_JWT_SECRET is shorter than %d bytes: refused outside development", needed)
        else:
            reader.problem(f"NOTIFIER_JWT_SECRET is too weak: at least {needed} bytes are required for {algorithm}")


def _read_jwks(reader: Reader, path: str, algorithm: str) -> str | None:
    """The JWKS file's text, once every key in it has a unique ``kid``, the key
    type of ``algorithm`` and no placeholder. Read once, at startup (see docs/security.md)."""
    text = reader.file("JWT_JWKS_FILE", path)
    if text is None:
        return None
    try:
        keys = json.loads(text)["keys"]
        assert isinstance(keys, list) and keys and all(isinstance(key, dict) for key in keys)
    except (ValueError, KeyError, TypeError, AssertionError):
        reader.problem("NOTIFIER_JWT_JWKS_FILE must be a JSON Web Key Set: {\"keys\": [{\"kid\": ..., \"kty\": ...}, ...]}")
        return None
    kids = [key.get("kid") for key in keys]
    if not all(isinstance(kid, str) and kid for kid in kids) or len(set(kids)) != len(kids):
        reader.problem("NOTIFIER_JWT_JWKS_FILE: every key needs its own non-empty kid")
    wanted = JWK_TYPES.get(algorithm[:2])
    if any(key.get("kty") != wanted or key.get("alg", algorithm) != algorithm for key in keys):
        reader.problem(f"NOTIFIER_JWT_JWKS_FILE: every key must be kty {wanted} for NOTIFIER_JWT_ALGORITHM={algorithm}")
    if PLACEHOLDER in text:
        reader.problem(f"NOTIFIER_JWT_JWKS_FILE holds the example's placeholder ({PLACEHOLDER})")
    for key in keys:
        _check_jwk(reader, key, algorithm)
    return text


def _check_jwk(reader: Reader, key: dict[str, Any], algorithm: str) -> None:
    import jwt

    try:
        loaded = jwt.PyJWK(key, algorithm)
    except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError):
        reader.problem(f"NOTIFIER_JWT_JWKS_FILE: key {key.get('kid')!r} cannot be read as a {algorithm} key")
        return
    if algorithm in HMAC_ALGORITHMS and len(loaded.key) < _min_secret_bytes(algorithm):
        reader.problem(f"NOTIFIER_JWT_JWKS_FILE: key {key.get('kid')!r} is too weak: at least "
                       f"{_min_secret_bytes(algorithm)} bytes are required for {algorithm}")


def _min_secret_bytes(algorithm: str) -> int:
    """RFC 7518 3.2: an HMAC key at least as long as the hash (32/48/64 bytes)."""
    return max(MIN_SECRET_BYTES, int(algorithm[2:]) // 8)


def default_dev_secret_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "notifier" / "dev-secret"


def load_dev_secret(path: str | None = None) -> str:
    """The local development secret, created on first use and kept (mode 0600)
    so that the service and ``notifier token`` agree across restarts."""
    secret_path = Path(path) if path else default_dev_secret_file()
    try:
        existing = secret_path.read_text().strip()
        if len(existing) >= MIN_SECRET_BYTES:
            return existing
    except FileNotFoundError:
        pass
    secret_path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(48)
    fd = os.open(secret_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
    log.warning("created a development JWT secret in %s", secret_path)
    return value
