"""
``pymail migrate USER --to maildir|mbox``: copy an account's mail from the
backend the configuration gives it to another backend, keeping folders,
flags, INTERNALDATEs, UIDs and UIDVALIDITY, and subscriptions.  (Special-use
roles are those the target gives a new account: Drafts, Sent, Trash, Junk,
Archive.)

The source is only read; nothing is deleted.  The target folders must be
empty (special-use folders a new account gets are fine).  Afterwards, point
the configuration at the new backend (``[storage] backend`` or
``[storage] domains``) and restart; then remove the old files.  Run it
while the server is stopped, or while no mail arrives for the account:
mail delivered to the old backend after a folder was copied is not copied.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any, TextIO

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from pymail.errors import StorageError
from pymail.interfaces import IMailbox, IMailboxRestore, IMailStore, IMailStoreFactory

#: Messages read into memory per batch while copying a folder.
BATCH = 500


def _wait(d: Deferred[Any]) -> Any:
    """The result of a Deferred that the synchronous reactor has already fired."""
    out: list[Any] = []
    d.addBoth(out.append)
    if not out:
        raise StorageError("a storage operation did not finish (needs a real reactor?)")
    if isinstance(out[0], Failure):
        out[0].raiseException()
    return out[0]


class Progress:
    """One line per folder, updated in place on a terminal; quiet otherwise."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._tty = stream.isatty()

    def update(self, folder: str, done: int, total: int) -> None:
        if self._tty:
            self._stream.write(f"\r{folder}: {done}/{total} messages")
            self._stream.flush()

    def finish(self, folder: str, total: int, kept_uids: bool) -> None:
        note = "" if kept_uids else " (new UIDs: the target cannot keep them)"
        prefix = "\r" if self._tty else ""
        self._stream.write(f"{prefix}{folder}: {total}/{total} messages copied{note}\n")
        self._stream.flush()


def copy_folder(source: IMailbox, target: IMailbox, progress: Progress) -> None:
    """Copy every message of ``source`` into the empty ``target``."""
    if target.messages():
        raise StorageError(f"folder {target.name!r} already holds mail in the target; "
                           "migrate needs empty target folders")
    infos = list(source.messages())
    total = len(infos)
    restorer = IMailboxRestore(target, None)
    if restorer is None:
        for n, info in enumerate(infos, 1):
            _wait(target.append(source.read(info.uid), info.flags, info.internaldate))
            progress.update(source.name, n, total)
        progress.finish(source.name, total, kept_uids=False)
        return
    batch: list[tuple[int, bytes, frozenset[str], Any]] = [
        (i.uid, source.read(i.uid), i.flags, i.internaldate) for i in infos
    ]
    progress.update(source.name, 0, total)
    _wait(restorer.restore(source.uidvalidity(), source.uidnext(), batch))
    progress.finish(source.name, total, kept_uids=True)


def migrate(source: IMailStore, target: IMailStore, progress: Progress) -> int:
    """Copy every folder, subscription and role; returns the number of messages."""
    count = 0
    existing = set(target.list_mailboxes())
    for name in source.list_mailboxes():
        if name not in existing:
            _wait(target.create_mailbox(name))
        src = _wait(source.get_mailbox(name))
        dst = _wait(target.get_mailbox(name))
        copy_folder(src, dst, progress)
        count += len(src.messages())
    for name in source.subscriptions():
        _wait(target.subscribe(name))
    return count


def add_migrate_command(add: Callable[[str, str, str], argparse.ArgumentParser],
                        config: Callable[[argparse.Namespace], Any]) -> None:
    """Add ``migrate`` to ``pymail``'s parser."""
    p = add("migrate", "copy an account's mail to another storage backend (keeps flags, "
                       "dates and UIDs)", "pymail migrate alice@example.org --to mbox")
    p.add_argument("address", metavar="USER", help="the account, e.g. alice@example.org")
    p.add_argument("--to", required=True, metavar="BACKEND",
                   help="the backend to copy to: maildir, mbox or a plugin's name")
    p.set_defaults(func=lambda args: run(args, config(args)))


def _factory(config: Any, backend: str, reactor: Any) -> IMailStoreFactory:
    from pymail.storage.plugins import discover_backends, make_store_factory, parse_options

    known = discover_backends()
    if backend not in known:
        raise StorageError(f"--to {backend!r} is not a known backend; available: "
                           f"{', '.join(sorted(known))}")
    return make_store_factory(backend, {}, parse_options(config.storage.options), reactor, known)


def run(args: argparse.Namespace, config: Any, out: TextIO | None = None) -> None:
    from pymail.cli import CommandError
    from pymail.service import make_stores
    from pymail.testing import ThreadlessReactor

    out = out if out is not None else sys.stderr
    address = args.address.lower()
    # The copy is one sequential job: thread-pool work runs inline.
    reactor = ThreadlessReactor()
    try:
        source_factory = make_stores(config, reactor)
        target_factory = _factory(config, args.to, reactor)
        source = source_factory.open_store(address, config.data_dir)
        target = target_factory.open_store(address, config.data_dir)
        count = migrate(source, target, Progress(out))
        # As the service does when it stops: the target's index changes
        # still waiting for their batch are written, its journals emptied.
        for factory in (target_factory, source_factory):
            finish = getattr(factory, "checkpoint_all", None)
            if finish is not None:
                finish()
    except (StorageError, ValueError) as e:
        raise CommandError(f"migrate {address}: {e}; the source is unchanged") from None
    print(f"copied {count} message(s) of {address} to {args.to}; now set [storage] backend "
          f"(or [storage] domains) to {args.to!r} and restart pymail", file=out)
