"""Bearer tokens: random, shown once, stored only as an HMAC.

Tokens carry 256 bits of randomness, so a keyed SHA-256 is enough (a slow password hash
would only add latency to every request); the key is ``ANNOLOOP_SECRET_KEY``, so a copy of
the database alone cannot be used to check guessed tokens.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

TOKEN_PREFIX = "al_"


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str, secret: str) -> str:
    return hmac.new(secret.encode(), token.encode(), hashlib.sha256).hexdigest()
