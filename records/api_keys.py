"""API keys of the database of record: only a key's sha256 is stored; the plaintext is shown once.

The API checks presented keys (api/deps.py); the CLI creates them (``optforge api key create``).
"""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.models import ApiKey

KEY_PREFIX = "ofk_"


def hash_key(key: str) -> str:
    """The stored form of an API key (sha256 hex)."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def create_api_key(session: Session, name: str, admin: bool = False) -> str:
    """Insert a key named ``name`` and return its plaintext (shown once, never stored).

    An ``admin`` key may also cancel what other keys own.

    Raises:
        ValueError: the name is empty or already used.
    """
    name = name.strip()
    if not name or len(name) > 128:
        raise ValueError("key name must be 1-128 characters")
    if session.scalar(select(ApiKey.id).where(ApiKey.name == name)) is not None:
        raise ValueError(f"an API key named {name!r} already exists")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiKey(name=name, prefix=key[:12], key_hash=hash_key(key), is_admin=admin))
    session.flush()
    return key
