"""Verification keys chosen by ``kid``: key rotation without a flag day.

``NOTIFIER_JWT_JWKS_FILE`` holds a JSON Web Key Set. Every token must name
one of its keys in its header's ``kid``; a token naming a key that is not in
the set (any more) is refused. Rotation: add the new key, deploy, sign new
tokens with it, wait until the old tokens have expired, remove the old key,
deploy. The first key in the file is the one ``notifier token`` signs with.

The file is read once per process, at startup (``config/`` validates it
there): every worker of a pod then agrees on the keys, and a broken edit stops
a rollout instead of breaking authentication in a running pod.
"""

from __future__ import annotations

import json
from typing import Any

import jwt

from .errors import Unauthorized


class KeyRing:
    def __init__(self, keys: dict[str, Any], signing_kid: str, signing_key: Any):
        self.keys = keys
        self.signing_kid = signing_kid
        self._signing_key = signing_key

    @classmethod
    def from_jwks(cls, text: str, algorithm: str, private_key: str | None = None) -> KeyRing:
        """Precondition: ``text`` passed ``config/``'s checks."""
        entries = json.loads(text)["keys"]
        keys = {entry["kid"]: jwt.PyJWK(entry, algorithm).key for entry in entries}
        first = entries[0]["kid"]
        # HMAC keys sign as they verify; RS/ES tokens are signed with the private key file.
        return cls(keys, first, keys[first] if algorithm.startswith("HS") else private_key)

    def verification_key(self, header: dict[str, Any], _claims: dict[str, Any]) -> Any:
        """flask-jwt-extended's decode_key_loader: the key the token's ``kid`` names."""
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise Unauthorized("token has no key id (kid) in its header; this service verifies by kid")
        try:
            return self.keys[kid]
        except KeyError:
            raise Unauthorized("token is signed with a key this service does not (or no longer) accept (kid)") from None

    def signing_key(self) -> Any:
        if self._signing_key is None:
            raise RuntimeError("minting RS/ES tokens needs NOTIFIER_JWT_PRIVATE_KEY_FILE")
        return self._signing_key
