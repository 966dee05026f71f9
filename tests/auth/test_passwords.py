"""Tests for pymail.directory.passwords (every scheme) and rehashing at login."""

from __future__ import annotations

import base64
import hashlib
import subprocess
from pathlib import Path

import bcrypt
from twisted.cred.credentials import UsernamePassword
from twisted.trial.unittest import SynchronousTestCase

from pymail.auth.checkers import AccountsChecker
from pymail.directory.files import FileDirectory
from pymail.directory.passwords import (
    hash_password,
    needs_rehash,
    parse_scram_credential,
    scheme_of,
    scram_credential,
    verify_password,
)
from pymail.testing import CheckerContract, ThreadlessReactor

# Published test vectors of "Unix crypt using SHA-256 and SHA-512" (Drepper).
SHA512_VECTORS = [
    ("Hello world!", "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4"
                     "OTLiBFdcbYEdFCoEOfaS35inz1"),
    ("Hello world!", "$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnC"
                     "M/UrjmM0Dp8vOuZeHBy/YTBmSK6H9qs/y3RnOaw5v."),
    ("a very much longer text to encrypt.  This one even stretches over morethan one line.",
     "$6$rounds=1400$anotherlongsalts$POfYwTEok97VWcjxIiSOjiykti.o/pQs.wPvMxQ6Fm7I6IoYN3"
     "CmLs66x9t0oSwbtEW7o7UmJEiDwGqd8p4ur1"),
]
SHA256_VECTORS = [
    ("Hello world!",
     "$5$rounds=10000$saltstringsaltst$3xv.VbSHBb41AL9AvLeujZkZRBAwqFMz2.opqey6IcA"),
]


class SchemeTests(SynchronousTestCase):
    def test_sha_crypt_vectors(self) -> None:
        """SHA512-CRYPT and SHA256-CRYPT give the published test vectors."""
        for password, expected in SHA512_VECTORS:
            self.assertTrue(verify_password(expected, password))
            self.assertFalse(verify_password(expected, password + "x"))
        for password, expected in SHA256_VECTORS:
            self.assertTrue(verify_password(expected, password))
            self.assertFalse(verify_password(expected, password + "x"))

    def test_sha512_crypt_from_openssl(self) -> None:
        """A hash made by `openssl passwd -6` verifies, bare and as {SHA512-CRYPT}."""
        made = subprocess.run(["openssl", "passwd", "-6", "-salt", "Qx7pZ1", "pässwort"],
                              capture_output=True, text=True, check=True).stdout.strip()
        self.assertTrue(verify_password(made, "pässwort"))
        self.assertTrue(verify_password("{SHA512-CRYPT}" + made, "pässwort"))
        self.assertFalse(verify_password(made, "passwort"))

    def test_bcrypt(self) -> None:
        """bcrypt $2b$/$2y$ hashes verify, bare and as Dovecot's {BLF-CRYPT}."""
        made = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()
        self.assertTrue(verify_password(made, "s3cret"))
        self.assertTrue(verify_password("{BLF-CRYPT}" + made.replace("$2b$", "$2y$"), "s3cret"))
        self.assertFalse(verify_password(made, "s3cret!"))

    def test_dovecot_digest_schemes(self) -> None:
        """{SSHA512}, {SHA256} and {SSHA} (base64) verify the right password only."""
        salt = b"\x01\x02salt"
        ssha512 = base64.b64encode(hashlib.sha512(b"pw" + salt).digest() + salt).decode()
        sha256 = base64.b64encode(hashlib.sha256(b"pw").digest()).decode()
        ssha = base64.b64encode(hashlib.sha1(b"pw" + salt).digest() + salt).decode()
        for stored in ("{SSHA512}" + ssha512, "{SHA256}" + sha256, "{SSHA}" + ssha):
            self.assertTrue(verify_password(stored, "pw"), stored)
            self.assertFalse(verify_password(stored, "pW"), stored)

    def test_unknown_schemes_never_match(self) -> None:
        """MD5-CRYPT, {PLAIN}, garbage and a mismatched {SCHEME} prefix never match."""
        for stored in ("$1$salt$abc", "{PLAIN}pw", "{CLEARTEXT}pw", "pw", "",
                       "{SHA512-CRYPT}$2b$04$abc", "{SSHA512}not base64!"):
            self.assertFalse(verify_password(stored, "pw"), stored)
            self.assertTrue(needs_rehash(stored))

    def test_needs_rehash_and_scheme_names(self) -> None:
        """Only pymail's own argon2id hashes need no rehash; schemes are named."""
        self.assertFalse(needs_rehash(hash_password("x")))
        self.assertEqual(scheme_of(hash_password("x")), "ARGON2ID")
        self.assertEqual(scheme_of(SHA512_VECTORS[0][1]), "SHA512-CRYPT")
        self.assertEqual(scheme_of("{SSHA512}abc"), "SSHA512")
        self.assertIsNone(scheme_of("{MD5-CRYPT}$1$x"))


class RehashTests(SynchronousTestCase):
    def test_imported_hash_is_rehashed_to_argon2id_at_login(self) -> None:
        """A SHA512-CRYPT account logs in and its stored hash becomes argon2id."""
        directory = FileDirectory(str(Path(self.mktemp())))
        directory.ensure_domains(["example.org"])
        password, stored = SHA512_VECTORS[0]
        directory.add_user("carol@example.org", stored)
        checker = AccountsChecker(directory, ThreadlessReactor())
        result = self.successResultOf(checker.requestAvatarId(
            UsernamePassword(b"carol@example.org", password.encode())))
        self.assertEqual(result, "carol@example.org")
        entry = directory.user("carol@example.org")
        assert entry is not None
        self.assertTrue(entry.password_hash.startswith("{ARGON2ID}$argon2id$"))
        self.assertTrue(verify_password(entry.password_hash, password))
        # And the new hash keeps working.
        self.successResultOf(checker.requestAvatarId(
            UsernamePassword(b"carol@example.org", password.encode())))

    def test_password_login_stores_a_missing_scram_credential(self) -> None:
        """An account without a SCRAM credential gets one of its password at a password login."""
        directory = FileDirectory(str(Path(self.mktemp())))
        directory.ensure_domains(["example.org"])
        stored = hash_password("pencil")
        directory.add_user("dave@example.org", stored)
        checker = AccountsChecker(directory, ThreadlessReactor())
        self.successResultOf(checker.requestAvatarId(
            UsernamePassword(b"dave@example.org", b"pencil")))
        entry = directory.user("dave@example.org")
        assert entry is not None and entry.scram is not None
        self.assertEqual(entry.password_hash, stored)
        iterations, salt, stored_key, _ = parse_scram_credential(entry.scram)  # type: ignore[misc]
        self.assertEqual(scram_credential("pencil", salt, iterations), entry.scram)

    def test_failed_login_does_not_rehash(self) -> None:
        """A wrong password leaves an imported hash alone."""
        directory = FileDirectory(str(Path(self.mktemp())))
        directory.ensure_domains(["example.org"])
        stored = SHA512_VECTORS[0][1]
        directory.add_user("carol@example.org", stored)
        checker = AccountsChecker(directory, ThreadlessReactor())
        self.failureResultOf(checker.requestAvatarId(
            UsernamePassword(b"carol@example.org", b"wrong")))
        entry = directory.user("carol@example.org")
        assert entry is not None
        self.assertEqual(entry.password_hash, stored)


class AccountsCheckerContract(CheckerContract, SynchronousTestCase):
    """pymail's own accounts-file checker keeps the checker contract."""

    def make_checker(self, users: dict[str, str]) -> AccountsChecker:
        directory = FileDirectory(self.mktemp())
        directory.ensure_domains(["example.org"])
        for address, password in users.items():
            directory.add_user(address, hash_password(password))
        return AccountsChecker(directory, self.reactor)
