"""Who is asking, and what may they reach: flask-jwt-extended wiring.

Two kinds of credentials, never interchangeable:

- **User tokens** (subscribers): access tokens whose ``sub`` is the user id.
  Browsers send them in an HttpOnly cookie (EventSource cannot send
  headers); other clients as ``Authorization: Bearer``. Extra topics are
  granted by a ``topics`` claim of patterns (``"orders:*"``).
- **Publisher tokens** (internal services): ``"role": "publisher"``, sent as
  a Bearer header only, optionally scoped by ``users``, ``topics`` and
  ``broadcast`` claims. Without any of those three, a publisher may reach
  everybody.

Tokens in the query string are refused: URLs end up in access logs, proxies
and browser history.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import jwt as pyjwt
from flask import Flask, current_app, request
from flask_jwt_extended import JWTManager, create_access_token, get_jwt, verify_jwt_in_request
from flask_jwt_extended.exceptions import JWTExtendedException, NoAuthorizationError, WrongTokenError

from .config import Config
from .errors import Forbidden, Unauthorized
from .events import Target

PUBLISHER_ROLE = "publisher"
# Query parameters that look like someone trying to pass a token in the URL.
QUERY_TOKEN_PARAMS = ("token", "access_token", "jwt", "authorization", "auth")


JWT_MODES = ("auto", "notifier", "host")
JWT_EXTENSION = "flask-jwt-extended"  # the key flask-jwt-extended registers its manager under


def host_uses_jwt(app: Flask) -> bool:
    """The host registered its own ``JWTManager`` (before mounting notifier)."""
    return isinstance(app.extensions.get(JWT_EXTENSION), JWTManager)


def configure_jwt(app: Flask, config: Config, *, mode: str = "notifier") -> str:
    """Decide who owns the app's JWT configuration, and set it up. Returns
    ``"notifier"`` or ``"host"``.

    flask-jwt-extended keeps one configuration per app (``JWT_*`` in
    ``app.config``, one ``JWTManager``): notifier and a host that uses it
    cannot each have their own. So, explicitly:

    - ``"host"`` (what ``"auto"`` picks when the host registered a
      ``JWTManager`` first): notifier changes no ``JWT_*`` setting and no
      callback; streams accept the host's access tokens, from the host's
      access cookie (its ``JWT_ACCESS_COOKIE_NAME``) or a Bearer header,
      whatever the host's ``JWT_TOKEN_LOCATION`` says, verified with the
      host's key, algorithms and callbacks (blocklist, claims checks).
      ``NOTIFIER_JWT_*`` are then not used to verify anything.
    - ``"notifier"`` (standalone, or a host without flask-jwt-extended): the
      ``JWT_*`` settings come from ``Config``; a ``JWT_*`` key the host set
      itself is kept. Refused when the host has its own ``JWTManager``: one
      of the two would silently verify with the other's settings.
    """
    if mode not in JWT_MODES:
        raise ValueError(f"jwt must be one of {', '.join(JWT_MODES)}, not {mode!r}")
    if mode == "auto":
        mode = "host" if host_uses_jwt(app) else "notifier"
    if mode == "host":
        if not host_uses_jwt(app):
            raise ValueError("jwt='host' needs the host's JWTManager: create it before Notifier(app)")
        return mode
    if host_uses_jwt(app) and app.extensions.get("notifier.jwt_manager") is not app.extensions[JWT_EXTENSION]:
        raise ValueError("this app already has its own flask-jwt-extended JWTManager: mount notifier with "
                         "jwt='host' (or 'auto') to use its tokens, or leave out its JWTManager")
    settings: dict[str, Any] = {
        "JWT_TOKEN_LOCATION": ["cookies", "headers"],
        "JWT_ALGORITHM": config.jwt_algorithm,
        "JWT_DECODE_ALGORITHMS": [config.jwt_algorithm],  # never "none", never a surprise
        "JWT_SECRET_KEY": config.jwt_secret,
        "JWT_PUBLIC_KEY": config.jwt_public_key,
        "JWT_PRIVATE_KEY": config.jwt_private_key,
        "JWT_ACCESS_COOKIE_NAME": config.jwt_cookie_name,
        "JWT_COOKIE_SECURE": config.jwt_cookie_secure,
        "JWT_COOKIE_SAMESITE": "Lax",
        "JWT_COOKIE_CSRF_PROTECT": True,  # applies to POST and friends, not to GET /v1/events
        "JWT_DECODE_LEEWAY": config.jwt_leeway_seconds,
        "JWT_ACCESS_TOKEN_EXPIRES": timedelta(hours=1),
    }
    for key, value in settings.items():
        app.config.setdefault(key, value)
    if not isinstance(app.extensions.get(JWT_EXTENSION), JWTManager):
        app.extensions["notifier.jwt_manager"] = JWTManager(app)
    return mode


@dataclass(frozen=True, slots=True)
class Subscriber:
    user_id: str
    expires_at: float | None
    topic_grants: tuple[str, ...] = ()


@dataclass(frozen=True)
class PublisherIdentity:
    name: str
    users: tuple[str, ...] | None = None  # None: unrestricted
    topics: tuple[str, ...] | None = None
    broadcast: bool = True
    restricted: bool = False

    def check(self, target: Target) -> None:
        """Raise Forbidden when this publisher may not reach ``target``."""
        if not self.restricted:
            return
        if target.kind == "broadcast":
            allowed = self.broadcast
        elif target.kind == "user":
            allowed = pattern_allows(target.name, self.users or ())
        else:
            allowed = pattern_allows(target.name, self.topics or ())
        if not allowed:
            what = "broadcast" if target.kind == "broadcast" else f"{target.kind} {target.name!r}"
            raise Forbidden(f"publisher {self.name!r} may not publish to {what}", field=target.kind)


def pattern_allows(name: str, patterns: Iterable[str]) -> bool:
    """``"*"`` allows everything, ``"orders:*"`` a prefix, anything else itself."""
    for pattern in patterns:
        if not isinstance(pattern, str):
            continue
        if pattern == "*" or pattern == name:
            return True
        if pattern.endswith("*") and name.startswith(pattern[:-1]):
            return True
    return False


def _refuse_query_tokens() -> None:
    if request.query_string and any(name in request.args for name in QUERY_TOKEN_PARAMS):
        raise Unauthorized("tokens are not accepted in the query string; use the cookie or an Authorization: Bearer header")


def _verify(locations: list[str]) -> dict[str, Any]:
    _refuse_query_tokens()
    try:
        verify_jwt_in_request(locations=locations)  # access tokens only: refresh tokens raise
    except pyjwt.ExpiredSignatureError:
        raise Unauthorized("token has expired") from None
    except pyjwt.InvalidTokenError as exc:
        raise Unauthorized(f"invalid token: {exc}") from None
    except JWTExtendedException as exc:
        raise Unauthorized(_jwt_message(exc)) from None
    claims = get_jwt()
    if not isinstance(claims.get("exp"), (int, float)):
        # A token that never expires is a credential that can never be taken back.
        raise Unauthorized("token has no expiry (exp); every token must expire")
    return claims


def _jwt_message(exc: Exception) -> str:
    if isinstance(exc, NoAuthorizationError):
        return "missing token: send the access cookie or an Authorization: Bearer header"
    if isinstance(exc, WrongTokenError):
        return "a refresh token cannot be used here; send an access token"
    return f"invalid token: {exc}"


def _string_list(value: Any) -> tuple[str, ...]:
    if isinstance(value, list):
        return tuple(item for item in value if isinstance(item, str))
    return ()


def authenticate_subscriber() -> Subscriber:
    claims = _verify(["cookies", "headers"])
    if claims.get("role") == PUBLISHER_ROLE:
        raise Forbidden("publisher credentials cannot subscribe; use a user's token")
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise Unauthorized("token has no subject (sub)")
    exp = claims.get("exp")
    return Subscriber(subject, float(exp) if isinstance(exp, (int, float)) else None, _string_list(claims.get("topics")))


# A publishing service sends the same token with every request, and verifying
# it (flask-jwt-extended + PyJWT) dominated a small publish. So each
# app remembers the identities of the last few publisher tokens it verified,
# keyed by the exact Authorization header, until the token expires (at most
# PUBLISHER_CACHE_SECONDS). Only a header that verified in full is ever
# remembered, so a hit is the same bytes already checked with this app's key.
PUBLISHER_CACHE_SIZE = 256
PUBLISHER_CACHE_SECONDS = 300.0


class PublisherCache:
    """Verified publisher identities by Authorization header, bounded in size and age."""

    def __init__(self, size: int = PUBLISHER_CACHE_SIZE, max_age: float = PUBLISHER_CACHE_SECONDS):
        self.size = size
        self.max_age = max_age
        self._entries: dict[str, tuple[float, PublisherIdentity]] = {}

    def get(self, header: str | None) -> PublisherIdentity | None:
        hit = self._entries.get(header) if header else None
        if hit is not None and time.time() < hit[0]:
            return hit[1]
        return None

    def put(self, header: str, expires_at: float, identity: PublisherIdentity) -> None:
        if len(self._entries) >= self.size:
            self._entries.clear()
        self._entries[header] = (min(expires_at, time.time() + self.max_age), identity)

    def __len__(self) -> int:
        return len(self._entries)


def publisher_cache(app: Flask) -> PublisherCache:
    cache: PublisherCache = app.extensions.setdefault("notifier.publisher_cache", PublisherCache())
    return cache


def authenticate_publisher() -> PublisherIdentity:
    _refuse_query_tokens()  # also on a cache hit
    header = request.headers.get("Authorization")
    cache = publisher_cache(current_app)
    known = cache.get(header)
    if known is not None:
        return known
    claims = _verify(["headers"])
    if claims.get("role") != PUBLISHER_ROLE:
        raise Forbidden("publishing needs a publisher credential (role: publisher), not a user's token")
    scoped = any(key in claims for key in ("users", "topics", "broadcast"))
    identity = PublisherIdentity(
        name=str(claims.get("sub") or "publisher"),
        users=_string_list(claims.get("users")) if "users" in claims else None,
        topics=_string_list(claims.get("topics")) if "topics" in claims else None,
        broadcast=claims.get("broadcast") is True if scoped else True,
        restricted=scoped,
    )
    exp = claims.get("exp")
    if header and isinstance(exp, (int, float)):
        cache.put(header, float(exp), identity)
    return identity


@dataclass
class TokenRequest:
    subject: str
    publisher: bool = False
    topics: list[str] = field(default_factory=list)
    users: list[str] | None = None
    broadcast: bool | None = None
    expires: timedelta = timedelta(hours=1)


def mint_token(config: Config, wanted: TokenRequest) -> str:
    """Sign a token with the configured key (for the CLI and the dev page)."""
    app = Flask("notifier-token")
    configure_jwt(app, config)
    claims: dict[str, Any] = {}
    if wanted.publisher:
        claims["role"] = PUBLISHER_ROLE
        if wanted.users is not None:
            claims["users"] = wanted.users
        if wanted.topics:
            claims["topics"] = wanted.topics
        if wanted.broadcast is not None:
            claims["broadcast"] = wanted.broadcast
    elif wanted.topics:
        claims["topics"] = wanted.topics
    with app.app_context():
        return create_access_token(identity=wanted.subject, additional_claims=claims, expires_delta=wanted.expires)
