"""
The account database in plain files under the data directory.

``domains``
    One local domain per line.
``passwd``
    One account per line, in Dovecot's passwd-file layout
    (``user:password:uid:gid:gecos:home:shell:extra_fields``); pymail uses the
    user (a lower-case ``local@domain``), the password hash and, in the
    extra fields, ``nologin`` for a disabled account and
    ``scram-sha-256=<iterations>:<salt>:<StoredKey>:<ServerKey>`` (base64;
    see :func:`pymail.directory.passwords.scram_credential`) for SCRAM-SHA-256
    logins.  Other extra fields are kept as they are.
``aliases``
    ``alias@domain: target@domain, other@domain`` lines.

In all three, blank lines and lines starting with ``#`` are ignored.  The
files are changed only by rewriting them atomically and durably (temporary
file, fsync, rename, directory fsync) under an ``fcntl`` lock on
``.accounts.lock``, so ``pymail`` commands can run while the server does.
The server re-reads a file when its inode, size or mtime changes: account
changes take effect without a restart.  Given a running reactor, the server
checks that at most once per reactor turn (an SMTP transaction looks the
same recipient up three times in one turn); a change is seen by the first
lookup of the next turn.
"""

from __future__ import annotations

import fcntl
import os
import re
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import MappingProxyType
from typing import Any

import attrs
from zope.interface import implementer

from pymail.errors import BadAddress, DirectoryError
from pymail.interfaces import IDirectory
from pymail.storage.fsutil import write_file_durably

DOMAINS = "domains"
PASSWD = "passwd"
ALIASES = "aliases"
LOCK = ".accounts.lock"

# A deliberately conservative account local part: it becomes a directory
# name, and '+' is the subaddress separator.
_LOCAL_RE = re.compile(r"^[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9_-])?$")
_DOMAIN_RE = re.compile(
    r"^(?=.{1,253}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$"
)

#: Local parts that exist in every local domain (RFC 5321 section 4.5.1;
#: RFC 2142) and go to the first account of the domain unless an alias says
#: otherwise.
ROLE_ADDRESSES = ("postmaster", "abuse")


def check_domain(domain: str) -> str:
    """
    The domain in canonical (lower-case, IDNA) form.

    :raises BadAddress: naming what is wrong.
    """
    d = domain.strip().rstrip(".").lower()
    try:
        d = d.encode("idna").decode("ascii")
    except UnicodeError:
        raise BadAddress(f"{domain!r} is not a valid domain name") from None
    if not _DOMAIN_RE.match(d):
        raise BadAddress(
            f"{domain!r} is not a valid domain name (letters, digits, '-' and '.' only)"
        )
    return d


def check_account_address(address: str) -> str:
    """
    The canonical form of an address usable as an account or alias name.

    :raises BadAddress: naming what is wrong and what is accepted.
    """
    local, at, domain = address.strip().rpartition("@")
    if not at or not local:
        raise BadAddress(f"{address!r} is not an address: expected local@domain")
    local = local.lower()
    if not _LOCAL_RE.match(local) or ".." in local:
        raise BadAddress(
            f"{address!r}: the local part may hold only letters, digits, '.', '_' and '-' "
            "(not '+', which separates subaddresses), at most 64 characters"
        )
    return f"{local}@{check_domain(domain)}"


def check_alias_name(alias: str) -> str:
    """An alias address, or ``@domain`` for a catch-all, in canonical form."""
    stripped = alias.strip()
    if stripped.startswith("@"):
        return "@" + check_domain(stripped[1:])
    return check_account_address(stripped)


def _lines(path: str) -> Iterator[tuple[int, str]]:
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                line = line.rstrip("\n")
                if line.strip() and not line.lstrip().startswith("#"):
                    yield number, line
    except FileNotFoundError:
        return


#: The extra field holding the SCRAM-SHA-256 credential.
SCRAM_FIELD = "scram-sha-256="


@attrs.frozen
class UserEntry:
    address: str
    password_hash: str = attrs.field(repr=False)
    disabled: bool = False
    #: ``<iterations>:<salt>:<StoredKey>:<ServerKey>``, or None: no SCRAM login.
    scram: str | None = attrs.field(default=None, repr=False)
    #: Extra fields pymail does not use, kept when the line is rewritten.
    other_extra: tuple[str, ...] = ()

    def to_line(self) -> str:
        extra = list(self.other_extra)
        if self.disabled:
            extra.insert(0, "nologin")
        if self.scram:
            extra.append(SCRAM_FIELD + self.scram)
        return f"{self.address}:{self.password_hash}::::::{' '.join(extra)}"


@attrs.define
class _Snapshot:
    domains: list[str] = attrs.Factory(list)
    users: dict[str, UserEntry] = attrs.Factory(dict)
    aliases: dict[str, list[str]] = attrs.Factory(dict)


def _parse(data_dir: str) -> _Snapshot:
    snap = _Snapshot()
    for _, line in _lines(os.path.join(data_dir, DOMAINS)):
        d = line.strip().lower()
        if d not in snap.domains:
            snap.domains.append(d)
    for _, line in _lines(os.path.join(data_dir, PASSWD)):
        fields = line.split(":")
        if len(fields) < 2:
            continue
        # The extra fields may hold ':' (the SCRAM credential does).
        extra = ":".join(fields[7:]).split() if len(fields) > 7 else []
        address = fields[0].strip().lower()
        scram = next((e[len(SCRAM_FIELD):] for e in extra if e.startswith(SCRAM_FIELD)), None)
        other = tuple(e for e in extra if e != "nologin" and not e.startswith(SCRAM_FIELD))
        snap.users[address] = UserEntry(address, fields[1], "nologin" in extra, scram, other)
    for _, line in _lines(os.path.join(data_dir, ALIASES)):
        alias, colon, targets = line.partition(":")
        if colon:
            snap.aliases[alias.strip().lower()] = [
                t.strip().lower() for t in targets.split(",") if t.strip()
            ]
    return snap


@implementer(IDirectory)
class FileDirectory:
    """
    The account database of one data directory.  Reads are cached and
    re-validated with ``stat``: on every call, or, given a ``reactor``, on
    the first call of each reactor turn (while the reactor runs, in its
    thread, the one that made this object); writes lock, re-read, change and rewrite.

    :param reactor: an ``IReactorTime`` provider; None (the ``pymail``
        command) re-validates on every call.
    """

    def __init__(self, data_dir: str, reactor: Any = None) -> None:
        self.data_dir = data_dir
        self._stamp: tuple[object, ...] | None = None
        self._snap = _Snapshot()
        self._reactor = reactor
        #: The reactor's thread: the one that builds the server's directory.
        self._reactor_thread = threading.get_ident()
        self._paths = tuple(os.path.join(data_dir, name) for name in (DOMAINS, PASSWD, ALIASES))
        #: True from the first lookup of a reactor turn until the turn ends.
        self._checked_this_turn = False

    # -- reading -----------------------------------------------------------

    def _current_stamp(self) -> tuple[object, ...]:
        stamp: list[tuple[int, int, int] | None] = []
        for path in self._paths:
            try:
                st = os.stat(path)
                stamp.append((st.st_ino, st.st_size, st.st_mtime_ns))
            except FileNotFoundError:
                stamp.append(None)
        return tuple(stamp)

    def _end_turn(self) -> None:
        self._checked_this_turn = False

    def _current(self) -> _Snapshot:
        if self._checked_this_turn and self._stamp is not None:
            return self._snap
        reactor = self._reactor
        if (not self._checked_this_turn and reactor is not None
                and getattr(reactor, "running", False)
                and threading.get_ident() == self._reactor_thread):
            # callLater(0) runs in the next reactor iteration: the stamp is
            # checked again by the first lookup after this turn.
            self._checked_this_turn = True
            reactor.callLater(0, self._end_turn)
        stamp = self._current_stamp()
        if stamp != self._stamp:
            self._snap = _parse(self.data_dir)
            self._stamp = stamp
        return self._snap

    def domains(self) -> list[str]:
        return list(self._current().domains)

    def users(self) -> list[UserEntry]:
        return sorted(self._current().users.values(), key=lambda u: u.address)

    def aliases(self) -> dict[str, list[str]]:
        return dict(self._current().aliases)

    def alias_table(self) -> Mapping[str, list[str]]:
        # The snapshot is replaced, never changed in place: a read-only view
        # of it needs no copy.
        return MappingProxyType(self._current().aliases)

    def user(self, address: str) -> UserEntry | None:
        return self._current().users.get(address.lower())

    def is_local_domain(self, domain: str) -> bool:
        return domain.lower().rstrip(".") in self._current().domains

    def has_user(self, address: str) -> bool:
        entry = self._current().users.get(address.lower())
        return entry is not None and not entry.disabled

    def resolve(self, address: str) -> list[str] | None:
        snap = self._current()
        local, at, domain = address.rpartition("@")
        if not at:
            return None
        domain = domain.lower().rstrip(".")
        if domain not in snap.domains:
            return None
        base = local.split("+", 1)[0].lower()
        return self._expand(snap, f"{base}@{domain}", set())

    def _expand(self, snap: _Snapshot, address: str, seen: set[str]) -> list[str] | None:
        if address in seen:
            return []
        seen.add(address)
        if address in snap.users:
            return [address] if not snap.users[address].disabled else None
        if address in snap.aliases:
            out: list[str] = []
            for target in snap.aliases[address]:
                got = self._expand(snap, target, seen)
                for a in got or []:
                    if a not in out:
                        out.append(a)
            return out or None
        local, _, domain = address.partition("@")
        if local in ROLE_ADDRESSES:
            first = sorted(
                u for u, e in snap.users.items() if u.endswith("@" + domain) and not e.disabled
            )
            return first[:1] or None
        return None

    # -- writing -----------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[_Snapshot]:
        try:
            os.makedirs(self.data_dir, mode=0o700, exist_ok=True)
            fd = os.open(os.path.join(self.data_dir, LOCK), os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as e:
            raise DirectoryError(f"cannot open the account database in {self.data_dir}: "
                                 f"{e.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield _parse(self.data_dir)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        self._stamp = None

    def _write(self, name: str, header: str, lines: list[str]) -> None:
        body = header + "".join(line + "\n" for line in lines)
        write_file_durably(os.path.join(self.data_dir, name), body.encode("utf-8"))

    def _write_domains(self, snap: _Snapshot) -> None:
        self._write(DOMAINS, "# pymail local domains, one per line\n", snap.domains)

    def _write_users(self, snap: _Snapshot) -> None:
        self._write(
            PASSWD,
            "# pymail accounts (Dovecot passwd-file layout); manage with `pymail user`\n",
            [u.to_line() for u in sorted(snap.users.values(), key=lambda u: u.address)],
        )

    def _write_aliases(self, snap: _Snapshot) -> None:
        self._write(
            ALIASES,
            "# pymail aliases: alias@domain: target, target\n",
            [f"{a}: {', '.join(t)}" for a, t in sorted(snap.aliases.items())],
        )

    def add_domain(self, domain: str) -> str:
        domain = check_domain(domain)
        with self._locked() as snap:
            if domain in snap.domains:
                raise DirectoryError(f"domain {domain} exists already")
            snap.domains.append(domain)
            self._write_domains(snap)
        return domain

    def ensure_domains(self, domains: tuple[str, ...] | list[str]) -> list[str]:
        """Add those of ``domains`` that are missing; returns the ones added."""
        wanted = [check_domain(d) for d in domains]
        if all(d in self.domains() for d in wanted):
            return []
        added = []
        with self._locked() as snap:
            for d in wanted:
                if d not in snap.domains:
                    snap.domains.append(d)
                    added.append(d)
            if added:
                self._write_domains(snap)
        return added

    def delete_domain(self, domain: str) -> None:
        domain = check_domain(domain)
        with self._locked() as snap:
            if domain not in snap.domains:
                raise DirectoryError(f"domain {domain} does not exist")
            users = [u for u in snap.users if u.endswith("@" + domain)]
            if users:
                raise DirectoryError(
                    f"domain {domain} still has {len(users)} account(s) "
                    f"({', '.join(sorted(users)[:3])}{'...' if len(users) > 3 else ''}); "
                    "delete them first"
                )
            snap.domains.remove(domain)
            self._write_domains(snap)

    def add_user(self, address: str, password_hash: str, scram: str | None = None) -> str:
        address = check_account_address(address)
        domain = address.split("@")[1]
        with self._locked() as snap:
            if domain not in snap.domains:
                raise DirectoryError(
                    f"{domain} is not a local domain; add it first with "
                    f"`pymail domain add {domain}`"
                )
            if address in snap.users:
                raise DirectoryError(f"account {address} exists already")
            if address in snap.aliases:
                raise DirectoryError(f"{address} is an alias; delete the alias first")
            snap.users[address] = UserEntry(address, password_hash, scram=scram)
            self._write_users(snap)
        return address

    def set_password(self, address: str, password_hash: str, scram: str | None = None) -> None:
        """
        Replace the password hash, and the SCRAM credential with ``scram``
        (None removes it: a credential of the old password must not stay).
        """
        address = check_account_address(address)
        with self._locked() as snap:
            entry = snap.users.get(address)
            if entry is None:
                raise DirectoryError(f"account {address} does not exist")
            snap.users[address] = attrs.evolve(entry, password_hash=password_hash, scram=scram)
            self._write_users(snap)

    def set_disabled(self, address: str, disabled: bool) -> None:
        address = check_account_address(address)
        with self._locked() as snap:
            entry = snap.users.get(address)
            if entry is None:
                raise DirectoryError(f"account {address} does not exist")
            snap.users[address] = attrs.evolve(entry, disabled=disabled)
            self._write_users(snap)

    def delete_user(self, address: str) -> None:
        address = check_account_address(address)
        with self._locked() as snap:
            if address not in snap.users:
                raise DirectoryError(f"account {address} does not exist")
            del snap.users[address]
            self._write_users(snap)

    def add_alias(self, alias: str, targets: list[str]) -> str:
        """
        Add an alias, or targets to an existing one.  ``@domain`` is the
        domain's catch-all: it takes every local part that is neither an
        account nor another alias.
        """
        alias = check_alias_name(alias)
        if not targets:
            raise DirectoryError("an alias needs at least one target address")
        clean = []
        for t in targets:
            local, at, domain = t.strip().rpartition("@")
            if not at or not local or any(c in t for c in " ,:\n\r\t\0"):
                raise BadAddress(f"{t!r} is not a valid target address")
            clean.append(f"{local.lower()}@{check_domain(domain)}")
        domain = alias.split("@")[1]
        with self._locked() as snap:
            if domain not in snap.domains:
                raise DirectoryError(
                    f"{domain} is not a local domain; add it first with "
                    f"`pymail domain add {domain}`"
                )
            if alias in snap.users:
                raise DirectoryError(f"{alias} is an account; an alias cannot shadow it")
            merged = snap.aliases.get(alias, [])
            for t in clean:
                if t not in merged:
                    merged.append(t)
            snap.aliases[alias] = merged
            self._write_aliases(snap)
        return alias

    def delete_alias(self, alias: str) -> None:
        alias = check_alias_name(alias)
        with self._locked() as snap:
            if alias not in snap.aliases:
                raise DirectoryError(f"alias {alias} does not exist")
            del snap.aliases[alias]
            self._write_aliases(snap)
