"""The Maildir group commit made durable with syncfs: what is on disk at each sync."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from pymail.storage import fsutil
from pymail.storage.maildir import MaildirStoreFactory
from pymail.storage.maildir_folder import MaildirMailbox, _Pending
from pymail.interfaces import MessageInfo
from pymail.testing import ThreadlessReactor

MSG = b"From: a@example.org\r\nSubject: s\r\n\r\nhello\r\n"


class SyncfsGroupCommitTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.data = self.mktemp()
        self.root = Path(self.data, "mail", "example.org", "alice")
        store = MaildirStoreFactory(ThreadlessReactor(), sync="syncfs" if fsutil.syncfs else "fsync"
                                    ).open_store("alice@example.org", self.data)
        self.box: MaildirMailbox = self.successResultOf(store.get_mailbox("INBOX"))
        self.syncs: list[dict[str, Any]] = []

        def recording_syncfs(fd: int) -> None:
            self.syncs.append({
                "tmp": sorted(os.listdir(self.root / "tmp")),
                "new": sorted(os.listdir(self.root / "new")),
                "uidlist": (self.root / "dovecot-uidlist").read_text().splitlines()[1:],
                "fs": os.fstat(fd).st_dev,
            })

        self.box.syncfs = recording_syncfs

    def test_file_synced_in_tmp_then_name_and_uid_synced_before_the_append_returns(self) -> None:
        """First sync: the file is in tmp/ only; second: it is in new/ with its uidlist line."""
        uid = self.successResultOf(self.box.append(MSG))
        [name] = os.listdir(self.root / "new")
        assert len(self.syncs) == 2
        first, second = self.syncs
        assert first["tmp"] == [name] and first["new"] == [] and first["uidlist"] == []
        assert second["tmp"] == [] and second["new"] == [name]
        assert second["uidlist"] == [f"{uid} :{name}"]
        assert first["fs"] == second["fs"] == os.stat(self.root).st_dev
        assert (self.root / "new" / name).read_bytes() == MSG.replace(b"\r\n", b"\n")

    def test_failed_sync_fails_the_append_and_publishes_nothing(self) -> None:
        """When the first syncfs fails, the append fails and no message appears in new/."""
        def failing(fd: int) -> None:
            raise OSError(5, "Input/output error")

        self.box.syncfs = failing
        self.failureResultOf(self.box.append(MSG))
        assert os.listdir(self.root / "new") == []
        assert os.listdir(self.root / "tmp") == []
        assert self.box.messages() == []

    def test_a_file_that_cannot_be_renamed_fails_only_its_own_append(self) -> None:
        """In a group, a message whose rename fails gets the error; the others get UIDs."""
        good = self._pending("good")
        lost = self._pending("lost")
        os.unlink(lost.tmp)  # type: ignore[arg-type]
        published = self.box._publish_locked([lost, good], self.box.syncfs)  # type: ignore[arg-type]
        assert published == [good]
        assert isinstance(lost.error, FileNotFoundError)
        assert good.error is None
        assert os.listdir(self.root / "new") == ["good"]

    def _pending(self, base: str) -> _Pending:
        tmp = self.root / "tmp" / base
        tmp.write_bytes(b"Subject: x\n\nbody\n")
        info = MessageInfo(0, base, frozenset(), None, 20)  # type: ignore[arg-type]
        return _Pending(f"new/{base}", base, info, str(tmp))


class SyncfsAvailabilityTests(SynchronousTestCase):
    def test_syncfs_is_found_on_linux_5_8_and_later(self) -> None:
        """On this system fsutil.syncfs exists exactly when Linux gives it fsync's promise."""
        import platform

        release = tuple(int(p) for p in platform.release().split(".")[:2])
        expected = platform.system() == "Linux" and release >= (5, 8)
        assert (fsutil.syncfs is not None) == expected
        if fsutil.syncfs is not None:
            fd = os.open(".", os.O_RDONLY)
            try:
                fsutil.syncfs(fd)
            finally:
                os.close(fd)

    def test_syncfs_error_is_an_oserror(self) -> None:
        """syncfs on a closed descriptor raises OSError (EBADF), as os.fsync would."""
        if fsutil.syncfs is None:
            self.skipTest("no syncfs with fsync's promise on this system")
        fd = os.open(".", os.O_RDONLY)
        os.close(fd)
        error = self.assertRaises(OSError, fsutil.syncfs, fd)
        assert error.errno == 9
