"""Accounts, passwords, sessions and CSRF tokens.

- A user is the warehouse's ``users`` row (email only masked + HMAC-hashed, ``sleeve.ids``);
  the password's argon2id hash lives apart, in ``service_accounts``.
- Sessions are signed (itsdangerous), HttpOnly, SameSite=Lax cookies carrying the user id and
  nothing else personal; they expire after :data:`SESSION_MAX_AGE_S`.
- Every form carries a CSRF token that must match the visitor's signed CSRF cookie (double
  submit). JSON calls need a JSON body (a cross-site form cannot send one) and a same-site Origin.
- Sign-in is throttled per address and per client: after too many failures, 429 + Retry-After.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from collections import deque
from datetime import UTC, datetime

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from itsdangerous import BadSignature, URLSafeTimedSerializer

from sleeve.ids import hash_email, mask_email, stable_id
from sleeve.warehouse import Warehouse

SESSION_COOKIE, CSRF_COOKIE = "sleeve_session", "sleeve_csrf"
SESSION_MAX_AGE_S = 14 * 24 * 3600
MIN_PASSWORD, MAX_PASSWORD = 8, 128
MAX_EMAIL = 254
_EMAIL = re.compile(r"^[^@\s<>\"']{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9-]{1,63})+$")
# OWASP's argon2id minimum (19 MiB, 2 passes, 1 lane): a sign-in costs tens of ms, not a core.
HASHER = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
# Verified against when the address is unknown, so both cases take the same time.
_DUMMY_HASH = HASHER.hash(secrets.token_hex(16))


class AuthError(ValueError):
    """Sign-up or sign-in refused; ``status`` is the HTTP status and the message says why."""

    def __init__(self, message: str, status: int = 400, retry_after_s: int | None = None):
        super().__init__(message)
        self.status, self.retry_after_s = status, retry_after_s


def normalise_email(email: str) -> str:
    if not isinstance(email, str):
        raise AuthError("email must be text", 422)
    email = email.strip().lower()
    if len(email) > MAX_EMAIL or not _EMAIL.match(email):
        raise AuthError("email is not a valid address (like name@example.com)", 422)
    return email


def check_password(password: str) -> str:
    if not isinstance(password, str) or not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise AuthError(f"password must be {MIN_PASSWORD} to {MAX_PASSWORD} characters", 422)
    if "\x00" in password:
        raise AuthError("password must not contain NUL characters", 422)
    return password


def user_id_for(email_hash: str) -> str:
    """The same id the demo and the pipeline give the address (uuid5 of its keyed hash)."""
    return stable_id("user", email_hash)


def sign_up(warehouse: Warehouse, email: str, password: str, pii_key: str, now: datetime | None = None) -> dict:
    """Create the user and the account (made at ``now``, default the wall clock); returns
    ``{"user_id", "email_masked"}``."""
    email, password = normalise_email(email), check_password(password)
    email_hash = hash_email(email, pii_key)
    user_id = user_id_for(email_hash)
    # Taken only once an account exists: a users row without one (a sign-up cut short by a busy
    # warehouse, which a retry completes) is the same user, from the same address hash.
    if warehouse.query("SELECT user_id FROM service_accounts WHERE user_id = @u", {"u": user_id}):
        raise AuthError("an account with this email already exists; sign in instead", 409)
    now = now or datetime.now(UTC)  # when the account was made: an event time, not a key
    masked = mask_email(email)
    warehouse.upsert("users", [{"user_id": user_id, "email_hash": email_hash, "email_masked": masked,
                                "display_name": masked.split("@", 1)[0], "is_demo": False, "created_at": now}])
    warehouse.upsert("service_accounts", [{"user_id": user_id, "password_hash": HASHER.hash(password),
                                           "created_at": now, "updated_at": now}])  # last: it makes the account
    return {"user_id": user_id, "email_masked": masked}


class Throttle:
    """At most ``limit`` failed sign-ins per key in ``window_s``; in memory, per process."""

    def __init__(self, limit: int, window_s: float):
        self.limit, self.window_s = limit, window_s
        self._failures: dict[str, deque] = {}
        self._lock = threading.Lock()

    def retry_after(self, key: str) -> int:
        """Seconds until ``key`` may try again (0: now)."""
        now = time.monotonic()
        with self._lock:
            times = self._failures.get(key)
            while times and now - times[0] > self.window_s:
                times.popleft()
            if not times:
                self._failures.pop(key, None)
                return 0
            return int(self.window_s - (now - times[0])) + 1 if len(times) >= self.limit else 0

    def failed(self, key: str) -> None:
        with self._lock:
            self._failures.setdefault(key, deque()).append(time.monotonic())

    def forget(self, key: str) -> None:
        with self._lock:
            self._failures.pop(key, None)


PER_ADDRESS = Throttle(limit=5, window_s=300)
PER_CLIENT = Throttle(limit=30, window_s=300)


def sign_in(warehouse: Warehouse, email: str, password: str, pii_key: str, client: str) -> dict:
    """The account's ``{"user_id", "email_masked"}`` if the password is right; AuthError
    (401, or 429 while throttled) otherwise."""
    email = normalise_email(email)
    if not isinstance(password, str) or len(password) > MAX_PASSWORD:
        raise AuthError("wrong email or password", 401)
    email_hash = hash_email(email, pii_key)
    keys = (f"address:{email_hash}", f"client:{client}")
    wait = max(PER_ADDRESS.retry_after(keys[0]), PER_CLIENT.retry_after(keys[1]))
    if wait:
        raise AuthError(f"too many failed sign-ins; try again in {wait} s", 429, wait)
    user_id = user_id_for(email_hash)
    rows = warehouse.query("SELECT a.password_hash, u.email_masked FROM service_accounts AS a "
                           "JOIN users AS u ON u.user_id = a.user_id WHERE a.user_id = @u", {"u": user_id})
    try:
        HASHER.verify(rows[0]["password_hash"] if rows else _DUMMY_HASH, password)
        ok = bool(rows)
    except (VerificationError, InvalidHashError):
        ok = False
    if not ok:
        PER_ADDRESS.failed(keys[0])
        PER_CLIENT.failed(keys[1])
        raise AuthError("wrong email or password", 401)
    PER_ADDRESS.forget(keys[0])
    return {"user_id": user_id, "email_masked": rows[0]["email_masked"]}


def delete_account(warehouse: Warehouse, user_id: str) -> None:
    """The service's own rows of a user (after ``training.privacy.forget_user`` removed the rest)."""
    for table in ("service_accounts", "cover_inputs"):
        warehouse.execute(f"DELETE FROM {table} WHERE user_id = @u", {"u": user_id})


class Sessions:
    """Signed session and CSRF cookie values (the secret never leaves this object)."""

    def __init__(self, secret: str):
        self._session = URLSafeTimedSerializer(secret, salt="sleeve-session")
        self._csrf = URLSafeTimedSerializer(secret, salt="sleeve-csrf")

    def session_value(self, user: dict) -> str:
        return self._session.dumps({"u": user["user_id"], "m": user["email_masked"]})

    def user(self, value: str | None) -> dict | None:
        """``{"user_id", "email_masked"}`` of a valid session cookie, else None."""
        if not value:
            return None
        try:
            data = self._session.loads(value, max_age=SESSION_MAX_AGE_S)
        except BadSignature:
            return None
        if not isinstance(data, dict) or not isinstance(data.get("u"), str):
            return None
        return {"user_id": data["u"], "email_masked": data.get("m") or ""}

    def new_csrf(self) -> tuple[str, str]:
        """(token for the form, value for the cookie)."""
        token = secrets.token_urlsafe(24)
        return token, self._csrf.dumps(token)

    def csrf_token(self, cookie: str | None) -> str | None:
        if not cookie:
            return None
        try:
            token = self._csrf.loads(cookie, max_age=SESSION_MAX_AGE_S)
        except BadSignature:
            return None
        return token if isinstance(token, str) else None

    def csrf_ok(self, cookie: str | None, submitted: str | None) -> bool:
        token = self.csrf_token(cookie)
        return bool(token and submitted) and secrets.compare_digest(token, submitted)
