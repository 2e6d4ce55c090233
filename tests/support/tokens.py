"""Tokens made with PyJWT directly, independent of the code under test, so
the tests can also forge the bad ones (wrong key, alg none, refresh...)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import jwt

SECRET = "test-secret-" + "x" * 60


def token(sub: str = "alice", *, secret: str = SECRET, algorithm: str = "HS256", ttl: float = 3600,
          token_type: str = "access", **claims: Any) -> str:
    now = int(time.time())
    payload: dict[str, Any] = {"sub": sub, "iat": now, "nbf": now, "exp": now + int(ttl), "jti": uuid.uuid4().hex,
                               "type": token_type, "fresh": False}
    payload.update(claims)
    return jwt.encode(payload, secret, algorithm=algorithm)


def publisher(name: str = "billing", **claims: Any) -> str:
    return token(name, role="publisher", **claims)


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


def unsigned(sub: str = "alice") -> str:
    """``alg: none``: must always be refused."""
    now = int(time.time())
    return jwt.encode({"sub": sub, "iat": now, "exp": now + 3600, "type": "access"}, None, algorithm="none")
