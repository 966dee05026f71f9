"""Dovecot reads a pymail Maildir with the same UIDs, flags, keywords and subscriptions."""

from __future__ import annotations

import imaplib
import os
import shutil
import tempfile
from datetime import datetime, UTC
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from pymail.storage.maildir import MaildirStoreFactory
from pymail.testing import ThreadlessReactor

DOVECOT_IMAP = "/usr/lib/dovecot/imap"
USER = "alice@example.org"


class DovecotInteropTests(SynchronousTestCase):
    def setUp(self) -> None:
        assert os.path.exists(DOVECOT_IMAP), (
            f"{DOVECOT_IMAP} is missing (apt-get install dovecot-imapd)")
        # Dovecot will not serve mail as root: when we are root, it runs as
        # 'nobody', so the mail must live where 'nobody' can reach it.
        self.work = tempfile.mkdtemp(prefix="pymail-dovecot-")
        self.addCleanup(shutil.rmtree, self.work, True)
        os.chmod(self.work, 0o755)
        self.data = os.path.join(self.work, "data")
        self.root = os.path.join(self.data, "mail", "example.org", "alice")
        self.reactor = ThreadlessReactor()
        self.store = MaildirStoreFactory(self.reactor).open_store(USER, self.data)

    def dovecot(self) -> imaplib.IMAP4_stream:
        conf = os.path.join(self.work, "dovecot.conf")
        with open(conf, "w") as f:
            f.write(f"log_path = {self.work}/dovecot.log\nmail_location = maildir:{self.root}\n"
                    "ssl = no\n")
        command = f"env -i HOME={self.work} USER=nobody {DOVECOT_IMAP} -c {conf}"
        if os.getuid() == 0:
            for dirpath, _, filenames in os.walk(self.work):
                for path in [dirpath, *(os.path.join(dirpath, f) for f in filenames)]:
                    shutil.chown(path, "nobody", "nogroup")
            command = (f"env -i HOME={self.work} USER=nobody setpriv --reuid=nobody "
                       f"--regid=nogroup --clear-groups {DOVECOT_IMAP} -c {conf}")
        client = imaplib.IMAP4_stream(command)
        self.addCleanup(client.shutdown)
        return client

    def fetch_all(self, client: imaplib.IMAP4_stream) -> dict[int, tuple[set[str], bytes]]:
        typ, data = client.uid("FETCH", "1:*", "(FLAGS BODY.PEEK[])")
        assert typ == "OK", data
        out = {}
        for item in data:
            if not isinstance(item, tuple):
                continue
            head, body = item
            uid = int(head.split(b"UID ")[1].split()[0])
            flags = head.split(b"FLAGS (")[1].split(b")")[0].decode().split()
            out[uid] = (set(flags) - {"\\Recent"}, body)
        return out

    def test_dovecot_sees_pymail_uids_flags_keywords(self) -> None:
        """UIDVALIDITY, UIDs, flags, keywords, bodies, folders, subscriptions match in Dovecot."""
        inbox: Any = self.successResultOf(self.store.get_mailbox("INBOX"))
        when = datetime(2022, 3, 4, 5, 6, 7, tzinfo=UTC)
        msgs = [b"Subject: %d\r\n\r\nbody %d\r\n" % (n, n) for n in range(4)]
        uids = [self.successResultOf(inbox.append(m, (), when)) for m in msgs]
        self.successResultOf(inbox.set_flags([uids[1]], ["\\Seen", "$Work"], "add"))
        self.successResultOf(inbox.set_flags([uids[2]], ["\\Flagged", "\\Answered"], "add"))
        self.successResultOf(inbox.set_flags([uids[0]], ["\\Deleted"], "add"))
        self.successResultOf(inbox.expunge())
        self.successResultOf(self.store.create_mailbox("Entwürfe"))
        self.successResultOf(self.store.subscribe("Entwürfe"))
        client = self.dovecot()
        typ, data = client.select("INBOX")
        assert typ == "OK" and data == [b"3"], data
        validity = client.response("UIDVALIDITY")[1][0]
        assert int(validity) == inbox.uidvalidity()
        got = self.fetch_all(client)
        assert sorted(got) == uids[1:]
        assert got[uids[1]] == ({"\\Seen", "$Work"}, msgs[1])
        assert got[uids[2]] == ({"\\Flagged", "\\Answered"}, msgs[2])
        assert got[uids[3]] == (set(), msgs[3])
        typ, listed = client.list()
        assert any(b'"Entw&APw-rfe"' in line or b"Entw&APw-rfe" in line for line in listed), listed
        typ, subscribed = client.lsub()
        names = b" ".join(subscribed)
        assert b"Entw&APw-rfe" in names and b"Sent" in names and b"INBOX" in names, subscribed

        # And back: what Dovecot changes and adds, pymail sees with Dovecot's UIDs.
        typ, _ = client.uid("STORE", str(uids[3]), "+FLAGS", "(\\Seen Later)")
        assert typ == "OK"
        typ, data = client.append("INBOX", "(\\Draft)", None, b"Subject: dovecot\r\n\r\nhi\r\n")
        assert typ == "OK"
        new_uid = int(data[0].split(b"APPENDUID ")[1].split()[1].rstrip(b"]"))
        client.logout()
        again: Any = self.successResultOf(
            MaildirStoreFactory(ThreadlessReactor()).open_store(USER, self.data)
            .get_mailbox("INBOX"))
        assert [i.uid for i in again.messages()] == uids[1:] + [new_uid]
        assert again.info(uids[3]).flags == {"\\Seen", "Later"}
        assert again.info(new_uid).flags == {"\\Draft"}
        assert again.read(new_uid) == b"Subject: dovecot\r\n\r\nhi\r\n"
        assert again.info(uids[1]).flags == {"\\Seen", "$Work"}
