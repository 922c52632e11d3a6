"""Password hashing (scrypt) and bearer-token helpers, stdlib only.

scrypt is memory-hard, so a stolen database is expensive to brute-force even on GPUs. The encoded
hash names its own parameters, so `n` can be raised later without invalidating stored hashes.
Every function here is blocking and CPU-bound: call it from a worker thread, not from trio.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

SCHEME = "scrypt"
DEFAULT_N = 2**14
R = 8
P = 1
SALT_BYTES = 16
HASH_BYTES = 32
TOKEN_BYTES = 32


def hash_password(password: str, *, n: int = DEFAULT_N) -> str:
    """Encode `password` as `scrypt$n$r$p$salt_b64$hash_b64` with a fresh random salt."""
    check_cost(n)
    salt = secrets.token_bytes(SALT_BYTES)
    digest = _scrypt(password, salt, n, R, P, HASH_BYTES)
    return "$".join((SCHEME, str(n), str(R), str(P), _b64(salt), _b64(digest)))


def check_cost(n: int) -> None:
    """Reject an scrypt `n` that scrypt itself would refuse, before any password depends on it."""
    if n < 2 or n & (n - 1):
        raise ValueError(f"scrypt n must be a power of 2 greater than 1, not {n}")


def verify_password(password: str, encoded: str) -> bool:
    """True if `password` matches `encoded`; the comparison is constant-time.

    Raises ValueError for a malformed `encoded` value: that is corrupt data, not a wrong password.
    """
    scheme, n, r, p, salt_b64, digest_b64 = encoded.split("$")
    if scheme != SCHEME:
        raise ValueError(f"unknown password hash scheme {scheme!r}")
    expected = base64.b64decode(digest_b64, validate=True)
    salt = base64.b64decode(salt_b64, validate=True)
    actual = _scrypt(password, salt, int(n), int(r), int(p), len(expected))
    return hmac.compare_digest(actual, expected)


def new_token() -> str:
    """A fresh bearer token (256 random bits, URL-safe)."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_hash(token: str) -> str:
    """What the database stores for a token: a leaked table does not leak usable tokens.

    A fast hash is enough here (unlike passwords): tokens carry 256 bits of entropy.
    """
    return hashlib.sha256(token.encode()).hexdigest()


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    # OpenSSL refuses to allocate more than maxmem (32 MiB by default): allow what n and r need.
    maxmem = 128 * r * (n + p + 2) + 1024 * 1024
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=maxmem, dklen=dklen)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
