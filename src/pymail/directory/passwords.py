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
import re
from collections.abc import Callable

import argon2

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
        return lambda password: _compare(sha_crypt(password, value, hashlib.sha512), value)
    if value.startswith("$5$"):
        return lambda password: _compare(sha_crypt(password, value, hashlib.sha256), value)
    return None


def _compare(computed: str | None, stored: str) -> bool:
    return computed is not None and hmac.compare_digest(computed.encode(), stored.encode())


def _verify_argon2(phc: str, password: str) -> bool:
    try:
        return _hasher.verify(phc, password)
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


# -- SHA-crypt (Ulrich Drepper, "Unix crypt using SHA-256 and SHA-512") ----------

_ITOA64 = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_ROUNDS_DEFAULT = 5000
_ROUNDS_MIN, _ROUNDS_MAX = 1000, 999_999_999
#: The byte order of the final encoding, in groups of three.
_ORDER_512 = [(0, 21, 42), (22, 43, 1), (44, 2, 23), (3, 24, 45), (25, 46, 4), (47, 5, 26),
              (6, 27, 48), (28, 49, 7), (50, 8, 29), (9, 30, 51), (31, 52, 10), (53, 11, 32),
              (12, 33, 54), (34, 55, 13), (56, 14, 35), (15, 36, 57), (37, 58, 16),
              (59, 17, 38), (18, 39, 60), (40, 61, 19), (62, 20, 41)]
_ORDER_256 = [(0, 10, 20), (21, 1, 11), (12, 22, 2), (3, 13, 23), (24, 4, 14), (15, 25, 5),
              (6, 16, 26), (27, 7, 17), (18, 28, 8), (9, 19, 29)]
_SHA_CRYPT = re.compile(r"\$([56])\$(?:rounds=([0-9]{1,10})\$)?([^$]{0,16})[^$]*(?:\$.*)?", re.S)


def _b64_24(b2: int, b1: int, b0: int, n: int) -> str:
    w = (b2 << 16) | (b1 << 8) | b0
    out = []
    for _ in range(n):
        out.append(_ITOA64[w & 0x3F])
        w >>= 6
    return "".join(out)


def _repeat(block: bytes, length: int) -> bytes:
    return (block * (length // len(block) + 1))[:length]


def sha_crypt(password: str, setting: str, digest: Callable[..., hashlib._Hash]) -> str | None:
    """
    The SHA-crypt (``$5$``/``$6$``) hash of ``password`` with the salt and
    rounds of ``setting`` (a full hash or just ``$6$[rounds=N$]salt``), or
    None if ``setting`` is not one.
    """
    match = _SHA_CRYPT.fullmatch(setting)
    if match is None:
        return None
    ident, rounds_text, salt_text = match.groups()
    size = 64 if ident == "6" else 32
    rounds = _ROUNDS_DEFAULT
    if rounds_text is not None:
        rounds = min(max(int(rounds_text), _ROUNDS_MIN), _ROUNDS_MAX)
    p = password.encode("utf-8")
    s = salt_text.encode("utf-8")
    b = digest(p + s + p).digest()
    a = digest(p + s)
    a.update(_repeat(b, len(p)))
    n = len(p)
    while n:
        a.update(b if n & 1 else p)
        n >>= 1
    current = a.digest()
    p_seq = _repeat(digest(p * len(p)).digest(), len(p))
    s_seq = _repeat(digest(s * (16 + current[0])).digest(), len(s))
    for i in range(rounds):
        c = digest()
        c.update(p_seq if i & 1 else current)
        if i % 3:
            c.update(s_seq)
        if i % 7:
            c.update(p_seq)
        c.update(current if i & 1 else p_seq)
        current = c.digest()
    if size == 64:
        encoded = "".join(_b64_24(current[x], current[y], current[z], 4)
                          for x, y, z in _ORDER_512) + _b64_24(0, 0, current[63], 2)
    else:
        encoded = "".join(_b64_24(current[x], current[y], current[z], 4)
                          for x, y, z in _ORDER_256) + _b64_24(0, current[31], current[30], 3)
    rounds_part = f"rounds={rounds}$" if rounds_text is not None else ""
    return f"${ident}${rounds_part}{salt_text}${encoded}"
