"""Password hashing (argon2) and random tokens stored only as hashes."""

from __future__ import annotations

import hashlib
import os
import secrets

from argon2 import PasswordHasher, profiles
from argon2.exceptions import InvalidHashError, VerificationError

# The test suite creates thousands of users: it asks for argon2's cheapest parameters (about
# 1 ms instead of 100 ms a hash). Hashes record their parameters, so verification is unchanged;
# never set this variable anywhere else.
_hasher = (
    PasswordHasher.from_parameters(profiles.CHEAPEST)
    if os.environ.get("CIVICGRID_TEST_CHEAP_PASSWORD_HASHES") == "1"
    else PasswordHasher()
)
# Verifying against this keeps timing equal when the username does not exist.
_DUMMY_HASH = _hasher.hash("civicgrid-dummy-password")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def new_token(prefix: str = "") -> str:
    return prefix + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
