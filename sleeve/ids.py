"""Deterministic identifiers and hashes: the same natural key always gives the same id."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid

# Fixed namespace so ids are stable across machines and releases.
SLEEVE_NAMESPACE = uuid.UUID("5d2c3b8e-6a8f-4a47-9a55-3c1f0e2b9a10")


def stable_id(*parts: object) -> str:
    """uuid5 of the natural key parts, joined unambiguously."""
    return str(uuid.uuid5(SLEEVE_NAMESPACE, json.dumps([str(p) for p in parts], ensure_ascii=False)))


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def content_hash(obj: object) -> str:
    """sha256 of a JSON-serialisable object in canonical form (sorted keys, no whitespace)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return sha256_bytes(text.encode("utf-8"))


def mask_email(email: str) -> str:
    """'alice@example.com' -> 'a***@e***.com': enough to recognise, not enough to contact."""
    local, _, domain = email.strip().partition("@")
    if not local or not domain:
        raise ValueError("not an email address")
    host, _, tld = domain.rpartition(".")
    return f"{local[0]}***@{(host or tld)[0]}***.{tld if host else ''}".rstrip(".")


def hash_email(email: str, key: str) -> str:
    """HMAC of the normalised address: the same person maps to the same user, and without the
    key (SLEEVE_PII_KEY) the hash cannot be reversed by hashing a list of known addresses."""
    return hmac.new(key.encode("utf-8"), email.strip().lower().encode("utf-8"), hashlib.sha256).hexdigest()
