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

Both kinds must be access tokens (``"type": "access"``, as flask-jwt-extended
writes them), signed with the configured key (or a key of the JWKS chosen by
the token's ``kid``), and, when configured, carry the expected ``iss`` and
``aud``.

Where a request carries both an ``Authorization: Bearer`` header and the
cookie, the header wins: it was put there on purpose by the client, the
cookie may be a stale one the browser keeps sending. A header that does not
verify is a 401 even with a valid cookie beside it.

Tokens in the query string are refused: URLs end up in access logs, proxies
and browser history (a stream ticket, ``tickets.py``, is the one exception).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import jwt as pyjwt
from flask import Flask, current_app, request
from flask_jwt_extended import (
    JWTManager,
    create_access_token,
    get_jwt,
    get_jwt_request_location,
    verify_jwt_in_request,
)
from flask_jwt_extended.exceptions import (
    CSRFError,
    InvalidHeaderError,
    JWTDecodeError,
    JWTExtendedException,
    NoAuthorizationError,
    WrongTokenError,
)

from .config import Config
from .errors import Forbidden, Unauthorized
from .events import Target
from .keys import KeyRing

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
        # The header first: an explicit header wins over the cookie (see above).
        "JWT_TOKEN_LOCATION": ["headers", "cookies"],
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
        "JWT_DECODE_ISSUER": config.jwt_issuer,
        "JWT_ENCODE_ISSUER": config.jwt_issuer,
        "JWT_DECODE_AUDIENCE": config.jwt_audience,
        "JWT_ENCODE_AUDIENCE": config.jwt_audience,
    }
    for key, value in settings.items():
        app.config.setdefault(key, value)
    manager = app.extensions.get(JWT_EXTENSION)
    if not isinstance(manager, JWTManager):
        manager = app.extensions["notifier.jwt_manager"] = JWTManager(app)
    if config.jwt_jwks:
        ring = KeyRing.from_jwks(config.jwt_jwks, config.jwt_algorithm, config.jwt_private_key)
        app.extensions["notifier.keys"] = ring
        manager.decode_key_loader(ring.verification_key)
        manager.encode_key_loader(lambda _identity: ring.signing_key())
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
        verify_jwt_in_request(locations=locations)  # refresh tokens raise WrongTokenError
    except pyjwt.InvalidTokenError as exc:
        raise Unauthorized(token_problem(exc)) from None
    except JWTExtendedException as exc:
        raise Unauthorized(_jwt_message(exc)) from None
    claims = get_jwt()
    if not isinstance(claims.get("exp"), (int, float)):
        # A token that never expires is a credential that can never be taken back.
        raise Unauthorized("token has no expiry (exp); every token must expire")
    if _declared_type(get_jwt_request_location()) != "access":
        # An id token, a refresh token or any other kind signed with the same key is not a credential here.
        raise Unauthorized('token type must be "access" (the type claim)')
    return claims


def _declared_type(location: str | None) -> Any:
    """The ``type`` claim as the token spells it (flask-jwt-extended fills in
    "access" when a token has none: here a missing type is refused)."""
    if location == "headers":
        raw = request.headers.get("Authorization", "").split(None, 1)[-1]
    else:
        raw = request.cookies.get(current_app.config["JWT_ACCESS_COOKIE_NAME"], "")
    try:
        return pyjwt.decode(raw, options={"verify_signature": False}).get("type")
    except pyjwt.InvalidTokenError:  # pragma: no cover - it was just verified
        return None


# What each PyJWT refusal means, in our words (its own messages name library internals).
_TOKEN_PROBLEMS: tuple[tuple[type[Exception], str], ...] = (
    (pyjwt.ExpiredSignatureError, "token has expired"),
    (pyjwt.ImmatureSignatureError, "token is not valid yet (nbf or iat is in the future)"),
    (pyjwt.InvalidAudienceError, "token is meant for another audience (aud)"),
    (pyjwt.InvalidIssuerError, "token comes from another issuer (iss)"),
    (pyjwt.InvalidSignatureError, "token signature does not verify"),
    (pyjwt.InvalidAlgorithmError, "token is signed with an algorithm this service does not accept"),
    (pyjwt.DecodeError, "token is malformed (not a signed JWT)"),
)


def token_problem(exc: pyjwt.InvalidTokenError) -> str:
    if isinstance(exc, pyjwt.MissingRequiredClaimError):
        return f"token has no {exc.claim} claim"
    for kind, message in _TOKEN_PROBLEMS:
        if isinstance(exc, kind):
            return message
    return "token is not valid"


def _jwt_message(exc: Exception) -> str:
    if isinstance(exc, (NoAuthorizationError, InvalidHeaderError)):
        return _missing_token_message()
    if isinstance(exc, WrongTokenError):
        return "a refresh token cannot be used here; send an access token"
    if isinstance(exc, CSRFError):
        return "the cookie needs its CSRF token for this request (X-CSRF-TOKEN header)"
    if isinstance(exc, JWTDecodeError) and "sub" in str(exc):
        return "token has no subject (sub)"
    return "token is not valid"


def _missing_token_message() -> str:
    header = request.headers.get("Authorization")
    if header is None:
        return "missing token: send the access cookie or an Authorization: Bearer header"
    parts = header.split()
    if not parts or parts[0] != "Bearer":
        return "the Authorization header must be 'Bearer <token>'"
    return "the Authorization header must be 'Bearer <token>' with exactly one token"


def _string_list(value: Any) -> tuple[str, ...]:
    if isinstance(value, list):
        return tuple(item for item in value if isinstance(item, str))
    return ()


def authenticate_subscriber(locations: tuple[str, ...] = ("headers", "cookies")) -> Subscriber:
    """The user a request speaks for. The default order makes an explicit
    header win over the cookie (module docstring)."""
    claims = _verify(list(locations))
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
    ring: KeyRing | None = app.extensions.get("notifier.keys")
    headers = {"kid": ring.signing_kid} if ring else None
    with app.app_context():
        return create_access_token(identity=wanted.subject, additional_claims=claims, expires_delta=wanted.expires,
                                   additional_headers=headers)
