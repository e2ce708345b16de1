"""API tokens: making them, and finding the user a request's ``Authorization`` header names.

A token is ``secrets.token_urlsafe(32)`` (256 random bits), shown to the operator once by
``create-token``; the database keeps only its SHA-256 hash. A fast unsalted hash is enough
for secrets this long (nothing to brute-force, unlike a password), and it lets a request's
token be found with one index lookup. Blueprints that need a user authenticate every request::

    bp.before_request(require_token)      # then g.user is the token's owner
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from flask import g, request
from sqlalchemy import select
from werkzeug.datastructures import WWWAuthenticate
from werkzeug.exceptions import Unauthorized

from .extensions import db
from .models import ApiToken, User, as_utc, utcnow

#: ``last_used`` is written at most this often per token, so reads do not all become writes.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def new_token() -> tuple[str, str]:
    """A fresh token and the hash to store for it: ``(token, token_hash)``."""
    token = secrets.token_urlsafe(32)
    return token, hash_token(token)


def hash_token(token: str) -> str:
    """The hex SHA-256 of a token, as stored in ``api_tokens.token_hash``."""
    return hashlib.sha256(token.encode()).hexdigest()


def current_user() -> User:
    """The user :func:`require_token` authenticated for this request."""
    user: User = g.user
    return user


def require_token() -> None:
    """Authenticate the request by its bearer token (RFC 6750) and put its owner on ``g.user``.

    No cookie is ever read, so a cross-site request cannot carry credentials: the API needs no
    CSRF protection. Anything but a known token is refused with 401 and ``WWW-Authenticate``.
    """
    auth = request.authorization
    if auth is None or auth.type != "bearer":
        sent = bool(request.headers.get("Authorization"))
        raise _unauthorized(
            ("This API takes bearer tokens only" if sent else "This endpoint needs an API token")
            + ": send 'Authorization: Bearer <token>'."
        )
    if not auth.token:
        raise _unauthorized(
            "The Authorization header must be 'Bearer <token>'.", error="invalid_token"
        )
    record = db.session.scalar(
        select(ApiToken).where(ApiToken.token_hash == hash_token(auth.token))
    )
    if record is None:
        raise _unauthorized(
            "The API token is not valid: it is unknown or was revoked.", error="invalid_token"
        )
    now = utcnow()
    if record.last_used is None or now - as_utc(record.last_used) >= LAST_USED_RESOLUTION:
        record.last_used = now
        db.session.commit()
    g.user = record.user


def _unauthorized(detail: str, error: str | None = None) -> Unauthorized:
    # RFC 6750 section 3: no error code when the request carried no bearer token at all.
    challenge = WWWAuthenticate("bearer", {"error": error} if error else None)
    return Unauthorized(detail, www_authenticate=challenge)
