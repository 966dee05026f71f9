"""argon2 verification in kept work areas answers exactly as argon2-cffi does."""

from __future__ import annotations

import concurrent.futures
import resource
import threading

import argon2
import pytest
from argon2.low_level import Type, hash_secret

from pymail.directory import argon2_memory
from pymail.directory.passwords import hash_password, verify_password
from pymail.service import tune_allocator

PASSWORD = "correct horse \u00e9t\u00e9"


def _hashes() -> list[str]:
    made = []
    for kind in (Type.ID, Type.I, Type.D):
        for memory, lanes in ((19 * 1024, 1), (8 * 1024, 2), (4 * 1024, 4)):
            made.append(hash_secret(PASSWORD.encode(), b"saltsaltsalt1234", time_cost=2,
                                    memory_cost=memory, parallelism=lanes, hash_len=32,
                                    type=kind).decode())
    # Version 1.0 (0x10) hashes carry no "v=" field.
    made.append(hash_secret(PASSWORD.encode(), b"saltsaltsalt1234", time_cost=1,
                            memory_cost=1024, parallelism=1, hash_len=16, type=Type.I,
                            version=0x10).decode())
    made.append(argon2.PasswordHasher().hash(PASSWORD))
    return made


@pytest.mark.parametrize("phc", _hashes())
def test_same_answer_as_argon2_cffi(phc: str) -> None:
    """Right and wrong passwords get argon2-cffi's answer for every type, version and shape."""
    reference = argon2.PasswordHasher()
    assert argon2_memory.verify(phc, PASSWORD) is True
    assert reference.verify(phc, PASSWORD) is True
    for wrong in ("", "correct horse ete", PASSWORD + " ", PASSWORD[:-1]):
        assert argon2_memory.verify(phc, wrong) is False
        with pytest.raises(argon2.exceptions.VerifyMismatchError):
            reference.verify(phc, wrong)


@pytest.mark.parametrize("bad", [
    "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$!!!notbase64",
    "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA",          # salt shorter than 8 octets
    "$argon2id$v=19$m=19456,t=2,p=1",
    "$argon2id$v=19$m=x,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo",
    "$argon2id$v=19$m=1,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNo",  # memory below 8*p KiB
    "not a hash",
])
def test_malformed_hash_is_refused_not_crashed(bad: str) -> None:
    """A broken hash raises argon2's InvalidHashError, and verify_password says False."""
    with pytest.raises(argon2.exceptions.InvalidHashError):
        argon2_memory.verify(bad, PASSWORD)
    assert verify_password("{ARGON2ID}" + bad, PASSWORD) is False


def test_work_areas_are_reused_without_page_faults() -> None:
    """After the first check, a check touches a kept area: no fresh 19 MiB to fault in."""
    # As `twistd pymail` does: without it glibc would keep freed areas anyway
    # and this test could not tell the two ways apart.
    tune_allocator()
    stored = hash_password(PASSWORD)

    def faults_of_one_check() -> int:
        before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
        assert verify_password(stored, PASSWORD)
        return resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before

    got: list[int] = []

    def run() -> None:
        faults_of_one_check()
        got.extend(faults_of_one_check() for _ in range(3))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    # A fresh area is 19 MiB / 4 KiB = 4,864 faults; a reused one a handful.
    assert max(got) < 500, got


def test_more_checks_at_once_than_kept_areas() -> None:
    """Checks beyond AREAS at once map their own area and still answer right."""
    stored = hash_password(PASSWORD)
    jobs = [PASSWORD if i % 2 else "wrong" for i in range(4 * argon2_memory.AREAS)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        answers = list(pool.map(lambda p: verify_password(stored, p), jobs))
    assert answers == [p == PASSWORD for p in jobs]
