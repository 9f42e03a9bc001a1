"""Object-store keys that more than one stage relies on, so a writer and the readers (above
all ``training.privacy``, which must find everything of a user) cannot drift apart.

    users/<user_id>/                              everything personal of one user
    users/<user_id>/uploads/                      raw uploads (removed once normalised)
    users/<user_id>/adapters/<request_id>         a DreamBooth adapter folder
    users/<user_id>/personalize/<request_id>/     a personalisation run's manifests and results
    images/by-id/<image_id>.json                  the generator's per-image record (resume marker)
"""

from __future__ import annotations

import re

_USER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


def check_user_id(user_id: str) -> str:
    """User ids go into object keys: an opaque id, never an email or a path."""
    if not isinstance(user_id, str) or not _USER_ID.match(user_id):
        raise ValueError("user_id must be an opaque id of letters, digits, '-' or '_' (never an email)")
    return user_id


def user_prefix(user_id: str) -> str:
    return f"users/{check_user_id(user_id)}/"


def owner_of(key: str) -> str | None:
    """The user whose personal data ``key`` is (it lies under ``users/<user_id>/``), else None."""
    parts = key.lstrip("/").split("/")
    return parts[1] if len(parts) > 2 and parts[0] == "users" and _USER_ID.match(parts[1]) else None


def uploads_prefix(user_id: str) -> str:
    return f"{user_prefix(user_id)}uploads/"


def adapter_prefix(user_id: str, request_id: str) -> str:
    return f"{user_prefix(user_id)}adapters/{request_id}"


def personalize_prefix(user_id: str, request_id: str) -> str:
    return f"{user_prefix(user_id)}personalize/{request_id}/"


def image_record_key(image_id: str) -> str:
    return f"images/by-id/{image_id}.json"
