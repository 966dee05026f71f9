"""
Small file-system helpers with the durability rules pymail promises:
write to a temporary file, fsync it, rename it into place, fsync the
directory.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
from collections.abc import Callable


def fsync_dir(path: str) -> None:
    """fsync a directory, so renames and creations in it are durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _find_syncfs() -> Callable[[int], None] | None:
    """
    ``syncfs(2)`` from the C library, when it gives fsync's promise: Linux
    waits for the writes (POSIX only asks ``sync`` to schedule them), and
    from 5.8 on it reports a write-back error (before, it returned 0 even
    when the disk failed, so a failed write would be acknowledged).
    """
    if platform.system() != "Linux":
        return None
    try:
        major, minor = (int(part) for part in platform.release().split(".")[:2])
    except ValueError:
        return None
    if (major, minor) < (5, 8):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        function = libc.syncfs
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int]
    function.restype = ctypes.c_int

    def syncfs(fd: int) -> None:
        # ctypes lets other threads run while the call waits for the disk.
        if function(fd) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"syncfs: {os.strerror(errno)}")

    return syncfs


#: ``syncfs(fd)``: make everything written to the file system that holds
#: ``fd`` durable, as if every file and directory on it were fsynced (one
#: journal commit instead of one per file); ``None`` where the system does
#: not give that promise (then callers fsync file by file).
syncfs: Callable[[int], None] | None = _find_syncfs()


def write_file_durably(path: str, data: bytes, mode: int = 0o600) -> None:
    """
    Replace ``path`` with ``data`` atomically and durably: a reader sees the
    old or the new content, never a mix, and after return the new content
    survives a crash.
    """
    directory = os.path.dirname(path) or "."
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(directory)


class CRLFMessage(bytes):
    """
    A message in wire form in which every CR and every LF is part of a
    CRLF: :func:`to_lf` then only has to drop the CRs, in one pass (100 KiB:
    86 us instead of 171-180 us, on the committer thread that writes the
    file).  The SMTP server hands over every message it accepts this way:
    it refuses any with a bare CR or LF (:mod:`pymail.smtp.data`).  Only
    code that has checked that promise may make one; it is a plain
    ``bytes`` to everything else.
    """

    __slots__ = ()


def as_bytes(message: bytes | bytearray | memoryview) -> bytes:
    """``message`` as ``bytes``: itself when it is (a :class:`CRLFMessage` stays one)."""
    return message if isinstance(message, bytes) else bytes(message)


def to_lf(message: bytes) -> bytes:
    """Wire form (CRLF) to the on-disk form of Maildir and mbox (LF)."""
    if type(message) is CRLFMessage:
        return message.translate(None, b"\r")
    # The same as message.replace(b"\r\n", b"\n") (bare CRs and LFs stay).
    # replace() with a two-octet pattern counts the matches in one pass and
    # copies in a second; split and join take a third less time (100 KiB:
    # 115 us instead of 180 us) but hold one object per line meanwhile, so
    # only messages of ordinary size go that way.
    if len(message) <= _SPLIT_JOIN_LIMIT:
        return b"\n".join(message.split(b"\r\n"))
    return message.replace(b"\r\n", b"\n")


#: The largest message :func:`to_lf` converts by splitting it into lines
#: (at worst half a million lines, a few MiB of line objects).
_SPLIT_JOIN_LIMIT = 1024 * 1024


def to_crlf(data: bytes) -> bytes:
    """On-disk form (LF) to wire form (CRLF); CRLF already there is kept."""
    # Most stored mail holds no CR at all: a one-octet search (memchr) rules
    # that out about six times faster than the two-octet search for CRLF
    # (100 KiB: 25 us instead of 150 us in all).
    if b"\r" in data and b"\r\n" in data:
        data = data.replace(b"\r\n", b"\n")
    return data.replace(b"\n", b"\r\n")


def wire_size(disk_data: bytes) -> int:
    """The size ``to_crlf(disk_data)`` would have, without building it."""
    return len(disk_data) + disk_data.count(b"\n") - disk_data.count(b"\r\n")
