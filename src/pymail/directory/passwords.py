"""
Password hashes.  New hashes are argon2id (RFC 9106) via argon2-cffi, stored
in Dovecot's ``{SCHEME}`` notation, ``{ARGON2ID}$argon2id$v=19$...``, so the
accounts file reads like a Dovecot passwd-file.

Hashing and verifying are deliberately slow (tens of milliseconds): call
them from a thread, never from the reactor thread.
"""

from __future__ import annotations

import functools

import argon2

# OWASP's argon2id baseline (19 MiB, 2 passes, 1 lane): about 23 ms per
# verification on the project's 2-core machine.  argon2-cffi's default
# (64 MiB, 3 passes, 4 lanes) took 207 ms there: every IMAP/POP3/SMTP login
# pays it, and 4 lanes on 2 cores buy nothing.  Each hash carries its own
# parameters, so existing hashes keep verifying if these change.
_hasher = argon2.PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)

SCHEME = "{ARGON2ID}"



@functools.cache
def _dummy() -> str:
    # Verified when the user does not exist, so that a wrong user name costs
    # as much time as a wrong password and response time reveals no account.
    return _hasher.hash("pymail-timing-equaliser")


def hash_password(password: str) -> str:
    """A new argon2id hash of ``password`` in ``{ARGON2ID}...`` form."""
    return SCHEME + _hasher.hash(password)


def verify_password(stored: str | None, password: str) -> bool:
    """
    Whether ``password`` matches ``stored``.  With ``stored=None`` (no such
    user) the same work is done and the answer is False.
    """
    target = stored if stored is not None else SCHEME + _dummy()
    if not target.startswith(SCHEME):
        # Other schemes (bcrypt, SHA512-CRYPT, Dovecot imports) come with the
        # accounts-and-security work; an unknown scheme never matches.
        _verify_argon2(_dummy(), password)
        return False
    ok = _verify_argon2(target[len(SCHEME):], password)
    return ok and stored is not None


def _verify_argon2(phc: str, password: str) -> bool:
    try:
        return _hasher.verify(phc, password)
    except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
        return False
