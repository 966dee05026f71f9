"""
Password hashes.  New hashes are argon2id (RFC 9106) via argon2-cffi, stored
in Dovecot's ``{SCHEME}`` notation, ``{ARGON2ID}$argon2id$v=19$...``, so the
accounts file reads like a Dovecot passwd-file.

Verified too, so that accounts can be imported from Dovecot, /etc/shadow or
older systems (and are rehashed to argon2id at their next successful login,
see :func:`needs_rehash`):

==========================  ===============================================
stored form                 scheme
==========================  ===============================================
``{ARGON2ID}$argon2id$..``  argon2id (also ``{ARGON2I}``, a bare ``$argon2``)
``$2b$..`` ``$2a$`` ``$2y$`` bcrypt (also ``{BLF-CRYPT}`` and ``{BCRYPT}``)
``$6$..`` / ``$5$..``       SHA512-CRYPT / SHA256-CRYPT (also ``{SHA512-CRYPT}``,
                            ``{SHA256-CRYPT}``, ``{CRYPT}``)
``{SSHA512}`` ``{SHA512}``  salted / plain SHA-512, base64 (also 256 and SHA-1:
``{SSHA256}`` ``{SHA256}``  ``{SSHA}``, ``{SHA}``, ``{SHA1}``)
==========================  ===============================================

Anything else never matches: MD5-CRYPT, DES crypt, CRAM-MD5, and
``{PLAIN}``/``{CLEARTEXT}`` on purpose (a clear-text password in an imported
file is better re-set with ``pymail user passwd`` than trusted).

Hashing and verifying are deliberately slow (tens of milliseconds): call
them from a thread, never from the reactor thread.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import os
import re
from collections.abc import Callable
from typing import Any

import argon2
from passlib.hash import sha256_crypt, sha512_crypt
from passlib.utils import saslprep

from pymail.directory import argon2_memory

# OWASP's argon2id baseline (19 MiB, 2 passes, 1 lane): about 23 ms per
# verification on the project's 2-core machine.  argon2-cffi's default
# (64 MiB, 3 passes, 4 lanes) took 207 ms there: every IMAP/POP3/SMTP login
# pays it, and 4 lanes on 2 cores buy nothing.  Each hash carries its own
# parameters, so existing hashes keep verifying if these change.
_hasher = argon2.PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)

SCHEME = "{ARGON2ID}"

_BRACED = re.compile(r"\{([A-Za-z0-9._-]+)\}(.*)", re.S)


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
    Whether ``password`` matches ``stored`` (any scheme in the module
    docstring).  With ``stored=None`` (no such user) or an unknown scheme the
    same argon2id work is done and the answer is False.
    """
    verifier = _verifier(stored) if stored is not None else None
    if verifier is None:
        _verify_argon2(_dummy(), password)
        return False
    return verifier(password)


def needs_rehash(stored: str) -> bool:
    """
    Whether ``stored`` should be replaced by :func:`hash_password` of the
    password that just matched it: any scheme but argon2id, or argon2id
    with weaker parameters than pymail's.
    """
    if not stored.startswith(SCHEME):
        return True
    try:
        return _hasher.check_needs_rehash(stored[len(SCHEME):])
    except (argon2.exceptions.InvalidHashError, ValueError):
        return True


def scheme_of(stored: str) -> str | None:
    """The scheme name of a stored hash (``"ARGON2ID"``, ``"BLF-CRYPT"``...), or None if unknown."""
    match = _BRACED.fullmatch(stored)
    if match:
        name = match.group(1).upper()
        return name if name in _BRACED_SCHEMES else None
    for prefix, name in _CRYPT_PREFIXES:
        if stored.startswith(prefix):
            return name
    return None


# -- the schemes --------------------------------------------------------------


def _verifier(stored: str) -> Callable[[str], bool] | None:
    match = _BRACED.fullmatch(stored)
    if match:
        make = _BRACED_SCHEMES.get(match.group(1).upper())
        return make(match.group(2)) if make is not None else None
    return _crypt_verifier(stored)


def _crypt_verifier(value: str) -> Callable[[str], bool] | None:
    if value.startswith("$argon2"):
        return lambda password: _verify_argon2(value, password)
    if value[:4] in ("$2a$", "$2b$", "$2y$"):
        return lambda password: _verify_bcrypt(value, password)
    if value.startswith("$6$"):
        return lambda password: _verify_sha_crypt(sha512_crypt, value, password)
    if value.startswith("$5$"):
        return lambda password: _verify_sha_crypt(sha256_crypt, value, password)
    return None


def _verify_sha_crypt(scheme: Any, value: str, password: str) -> bool:
    try:
        return bool(scheme.verify(password, value))
    except (ValueError, TypeError):  # a malformed hash never matches
        return False


def _verify_argon2(phc: str, password: str) -> bool:
    # In a kept, already-mapped work area (argon2_memory says why): the same
    # answer as _hasher.verify, 30-32 ms of CPU down to about 19 ms.
    try:
        return argon2_memory.verify(phc, password)
    except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
        return False


def _verify_bcrypt(value: str, password: str) -> bool:
    import bcrypt

    secret = password.encode("utf-8")
    if len(secret) > 72:
        # bcrypt only ever used the first 72 octets; bcrypt>=5 refuses more.
        secret = secret[:72]
    try:
        return bcrypt.checkpw(secret, value.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        return False


def _digest_verifier(algorithm: str, salted: bool) -> Callable[[str], Callable[[str], bool] | None]:
    size = hashlib.new(algorithm).digest_size

    def make(encoded: str) -> Callable[[str], bool] | None:
        try:
            raw = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            try:
                raw = bytes.fromhex(encoded.strip())  # Dovecot also accepts hex
            except ValueError:
                return None
        if len(raw) < size or (not salted and len(raw) != size):
            return None
        digest, salt = raw[:size], raw[size:]

        def check(password: str) -> bool:
            computed = hashlib.new(algorithm, password.encode("utf-8") + salt).digest()
            return hmac.compare_digest(computed, digest)

        return check

    return make


def _crypt_only(prefixes: tuple[str, ...]) -> Callable[[str], Callable[[str], bool] | None]:
    def make(value: str) -> Callable[[str], bool] | None:
        if not value.startswith(prefixes):
            return None
        return _crypt_verifier(value)

    return make


_BRACED_SCHEMES: dict[str, Callable[[str], Callable[[str], bool] | None]] = {
    "ARGON2ID": _crypt_only(("$argon2id$",)),
    "ARGON2I": _crypt_only(("$argon2i$",)),
    "BLF-CRYPT": _crypt_only(("$2a$", "$2b$", "$2y$")),
    "BCRYPT": _crypt_only(("$2a$", "$2b$", "$2y$")),
    "SHA512-CRYPT": _crypt_only(("$6$",)),
    "SHA256-CRYPT": _crypt_only(("$5$",)),
    "CRYPT": _crypt_only(("$6$", "$5$", "$2a$", "$2b$", "$2y$")),
    "SSHA512": _digest_verifier("sha512", salted=True),
    "SHA512": _digest_verifier("sha512", salted=False),
    "SSHA256": _digest_verifier("sha256", salted=True),
    "SHA256": _digest_verifier("sha256", salted=False),
    "SSHA": _digest_verifier("sha1", salted=True),
    "SHA": _digest_verifier("sha1", salted=False),
    "SHA1": _digest_verifier("sha1", salted=False),
}

_CRYPT_PREFIXES = (
    ("$argon2id$", "ARGON2ID"),
    ("$argon2i$", "ARGON2I"),
    ("$2a$", "BLF-CRYPT"),
    ("$2b$", "BLF-CRYPT"),
    ("$2y$", "BLF-CRYPT"),
    ("$6$", "SHA512-CRYPT"),
    ("$5$", "SHA256-CRYPT"),
)


# -- SCRAM-SHA-256 (RFC 5802, RFC 7677) ----------------------------------------

#: PBKDF2 iterations of new SCRAM-SHA-256 credentials.  RFC 7677 section 4:
#: at least 4096; more costs every client that much on every login.
SCRAM_ITERATIONS = 10_000
#: Salt length of new SCRAM credentials, in octets.
SCRAM_SALT_OCTETS = 16


def scram_prepare(password: str) -> str:
    """
    ``password`` after SASLprep (RFC 4013, via libpass): e.g. a soft hyphen
    is dropped and non-ASCII spaces become spaces, so a client that
    normalises (as RFC 5802 requires) and the stored credential agree.  A
    password SASLprep refuses (control characters, unassigned code points)
    is used as it is: a normalising client cannot use SCRAM with it anyway.
    """
    try:
        return str(saslprep(password))
    except ValueError:
        return password


def scram_keys(password: str, salt: bytes, iterations: int) -> tuple[bytes, bytes]:
    """
    StoredKey and ServerKey of ``password`` (RFC 5802 section 3), SHA-256,
    over the password normalised with SASLprep as RFC 5802 asks (see
    :func:`scram_prepare`).
    """
    salted = hashlib.pbkdf2_hmac("sha256", scram_prepare(password).encode("utf-8"), salt,
                                 iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    return hashlib.sha256(client_key).digest(), server_key


def scram_credential(password: str, salt: bytes | None = None,
                     iterations: int = SCRAM_ITERATIONS) -> str:
    """
    The SCRAM-SHA-256 credential of ``password`` as stored in the passwd
    file: ``<iterations>:<salt>:<StoredKey>:<ServerKey>``, base64.  It does
    not reveal the password (only PBKDF2 outputs), but like a hash it allows
    guessing offline, and StoredKey/ServerKey allow impersonating the server.
    """
    if salt is None:
        salt = os.urandom(SCRAM_SALT_OCTETS)
    stored_key, server_key = scram_keys(password, salt, iterations)
    b64 = base64.b64encode
    fields = (b64(salt).decode(), b64(stored_key).decode(), b64(server_key).decode())
    return f"{iterations}:" + ":".join(fields)


def parse_scram_credential(value: str) -> tuple[int, bytes, bytes, bytes] | None:
    """``(iterations, salt, StoredKey, ServerKey)`` of a stored credential, None if malformed."""
    parts = value.split(":")
    if len(parts) != 4 or not parts[0].isdigit():
        return None
    try:
        salt, stored, server = (base64.b64decode(p, validate=True) for p in parts[1:])
    except (binascii.Error, ValueError):
        return None
    iterations = int(parts[0])
    if iterations < 4096 or not salt or len(stored) != 32 or len(server) != 32:
        return None
    return iterations, salt, stored, server

