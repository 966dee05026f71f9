"""`pymail migrate`: Maildir <-> mbox keeps folders, flags, dates and UIDs."""

from __future__ import annotations

import contextlib
import io
import os
from datetime import datetime, UTC
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from pymail.cli import main
from pymail.storage.index import FolderIndex
from pymail.storage.maildir import MaildirStoreFactory
from pymail.storage.maildir_journal import JOURNAL
from pymail.storage.mbox import MboxStoreFactory
from pymail.testing import ThreadlessReactor

USER = "alice@example.org"


class MigrateTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.data = os.path.abspath(self.mktemp())
        os.makedirs(self.data)
        self.config = os.path.join(self.data, "pymail.toml")
        self.write_config("maildir")

    def write_config(self, backend: str) -> None:
        Path(self.config).write_text(
            f'data_dir = "{self.data}"\ndomains = ["example.org"]\n'
            f'[storage]\nbackend = "{backend}"\n')

    def run_cli(self, *argv: str) -> tuple[int, str]:
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = main(["--config", self.config, *argv])
        return code, err.getvalue()

    def fill(self, store: Any, r: Any) -> dict[str, Any]:
        when = datetime(2019, 7, 1, 12, 0, 0, tzinfo=UTC)
        self.successResultOf(store.create_mailbox("Lists.Python"))
        self.successResultOf(store.subscribe("Lists.Python"))
        for folder in ("INBOX", "Lists.Python"):
            box = self.successResultOf(store.get_mailbox(folder))
            for n in range(4):
                self.successResultOf(box.append(
                    b"Subject: %s %d\r\n\r\nFrom the body\r\n" % (folder.encode(), n),
                    ["\\Seen", "$Work"] if n % 2 else [], when))
            self.successResultOf(box.set_flags([box.messages()[0].uid], ["\\Deleted"], "add"))
            self.successResultOf(box.expunge())
        return self.snapshot(store)

    def snapshot(self, store: Any) -> dict[str, Any]:
        out = {}
        for folder in ("INBOX", "Lists.Python"):
            box = self.successResultOf(store.get_mailbox(folder))
            out[folder] = (box.uidvalidity(), box.uidnext(), [
                (i.uid, i.flags, i.internaldate, box.read(i.uid)) for i in box.messages()])
        return out

    def test_maildir_to_mbox_and_back(self) -> None:
        """Everything survives Maildir -> mbox -> Maildir (in a fresh data directory)."""
        r = ThreadlessReactor()
        source = MaildirStoreFactory(r).open_store(USER, self.data)
        expected = self.fill(source, r)
        code, err = self.run_cli("migrate", USER, "--to", "mbox")
        assert code == 0, err
        assert "copied 6 message(s)" in err
        target = MboxStoreFactory(ThreadlessReactor()).open_store(USER, self.data)
        assert self.snapshot(target) == expected
        assert "Lists.Python" in target.subscriptions()
        # Again into the same target: refused, nothing changed.
        code, err = self.run_cli("migrate", USER, "--to", "mbox")
        assert code == 1 and "already holds mail" in err
        assert self.snapshot(target) == expected
        # Back to Maildir, into a data directory that has none yet.
        os.rename(os.path.join(self.data, "mail"), os.path.join(self.data, "mail.old"))
        self.write_config("mbox")
        code, err = self.run_cli("migrate", USER, "--to", "maildir")
        assert code == 0, err
        # The command finishes as a stopping service does: the new folder's
        # index has every message's row and no delivery journal is left.
        inbox = os.path.join(self.data, "mail", "example.org", "alice")
        index = FolderIndex(inbox)
        index.open()
        rows = index.rows()
        index.close()
        assert sorted(rows) == [uid for uid, *_ in expected["INBOX"][2]]
        journal = os.path.join(inbox, JOURNAL)
        assert not os.path.exists(journal) or os.path.getsize(journal) == 0
        back = MaildirStoreFactory(ThreadlessReactor()).open_store(USER, self.data)
        assert self.snapshot(back) == expected

    def test_unknown_backend(self) -> None:
        """--to with an unknown backend names the ones available."""
        code, err = self.run_cli("migrate", USER, "--to", "floppy")
        assert code == 1 and "maildir" in err and "floppy" in err

    def test_help_has_an_example(self) -> None:
        """`pymail migrate --help` shows an example."""
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
            main(["migrate", "--help"])
        assert "pymail migrate alice@example.org --to mbox" in out.getvalue()
