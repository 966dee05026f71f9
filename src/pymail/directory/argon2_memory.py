"""
argon2 verification in memory that is already mapped.

Every login verifies an argon2id hash, which needs a 19 MiB work area.
:func:`pymail.service.tune_allocator` fixes glibc's mmap threshold (so the
server's RSS does not grow with every login thread), which means each
verification maps a fresh 19 MiB area and takes about 4,900 page faults to
touch it: measured 30-32 ms of CPU per verification against 19 ms when the
area is reused.  This module runs the verification through argon2-cffi's
documented low-level API (:func:`argon2.low_level.core`) with an allocation
callback that hands out one of a few work areas kept for the life of the
process (:data:`AREAS`, so at most ``AREAS`` x 19 MiB stay resident); a
verification that finds none free gets a fresh area, as before.  The
argon2 library wipes the area before giving it back (its default
"clear internal memory"), so nothing of a password outlives a check.

The answer is the one ``argon2.PasswordHasher.verify`` gives (tests compare
them on every hash shape pymail meets).
"""

from __future__ import annotations

import base64
import hmac
import threading
from typing import Any

import argon2
from argon2.low_level import core, ffi, lib

#: How many work areas are kept (a 2-core machine runs two verifications
#: at once at most usefully).
AREAS = 2

_ARGON2_OK = 0
_ARGON2_MEMORY_ALLOCATION_ERROR = -22


class _Areas:
    """The kept work areas, lent to one verification at a time."""

    def __init__(self, count: int) -> None:
        self._lock = threading.Lock()
        self._free: list[Any] = []
        self._unmade = count
        self.local = threading.local()

    def take(self) -> list[Any]:
        """A slot (a one-item list holding an area, or None until first use)."""
        with self._lock:
            if self._free:
                return self._free.pop()
            if self._unmade:
                self._unmade -= 1
                return [None]
        return []  # none to lend: this verification maps its own area

    def give(self, slot: list[Any]) -> None:
        if slot:
            with self._lock:
                self._free.append(slot)


_areas = _Areas(AREAS)


@ffi.callback("int(uint8_t **, size_t)")
def _allocate(memory: Any, size: int) -> int:
    slot = getattr(_areas.local, "slot", None)
    try:
        if slot:
            if slot[0] is None or len(slot[0]) < size:
                slot[0] = ffi.new("uint8_t[]", size)
            memory[0] = slot[0]
        else:
            # Kept alive until _free runs for it (same thread, same call).
            _areas.local.own = ffi.new("uint8_t[]", size)
            memory[0] = _areas.local.own
    except MemoryError:
        return _ARGON2_MEMORY_ALLOCATION_ERROR
    return _ARGON2_OK


@ffi.callback("void(uint8_t *, size_t)")
def _release(memory: Any, size: int) -> None:
    # The library has wiped the area already; a borrowed one stays mapped.
    _areas.local.own = None


def _b64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def verify(phc: str, password: str) -> bool:
    """
    Whether ``password`` matches the argon2 hash ``phc`` (``$argon2id$...``).

    :raises argon2.exceptions.InvalidHashError: ``phc`` is not an argon2 hash.
    """
    params = argon2.extract_parameters(phc)
    fields = phc.split("$")
    try:
        salt, digest = _b64(fields[-2]), _b64(fields[-1])
    except ValueError as e:
        raise argon2.exceptions.InvalidHashError(str(e)) from e
    secret = password.encode("utf-8")
    out = ffi.new("uint8_t[]", len(digest))
    pwd = ffi.new("uint8_t[]", secret)
    salt_c = ffi.new("uint8_t[]", salt)
    ctx = ffi.new("argon2_context *", {
        "out": out, "outlen": len(digest),
        "pwd": pwd, "pwdlen": len(secret),
        "salt": salt_c, "saltlen": len(salt),
        "secret": ffi.NULL, "secretlen": 0, "ad": ffi.NULL, "adlen": 0,
        "t_cost": params.time_cost, "m_cost": params.memory_cost,
        "lanes": params.parallelism, "threads": params.parallelism,
        "version": params.version,
        "allocate_cbk": _allocate, "free_cbk": _release,
        "flags": lib.ARGON2_DEFAULT_FLAGS,
    })
    slot = _areas.take()
    _areas.local.slot = slot
    try:
        result = core(ctx, params.type.value)
    finally:
        _areas.local.slot = None
        _areas.give(slot)
    if result != _ARGON2_OK:
        raise argon2.exceptions.InvalidHashError(
            ffi.string(lib.argon2_error_message(result)).decode("ascii", "replace"))
    return hmac.compare_digest(bytes(out), digest)
