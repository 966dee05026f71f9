"""Folder management on the web: create, rename, delete, with the storage's name rules."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from web_support import make_world, message


class FolderTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.world = make_world(special_use=True)
        self.browser = self.world.browser()
        self.browser.sign_in("alice@example.org")
        self.csrf = self.browser.csrf()
        self.store = self.world.stores.open_store("alice@example.org", "/nonexistent")

    def change(self, action: str, name: str, new: str = "") -> object:
        return self.browser.post("/folders", {"csrf": self.csrf, "action": action,
                                              "name": name, "new": new})

    def test_create_rename_delete(self) -> None:
        """A folder is created, renamed with its messages, and deleted from the folders page."""
        reply = self.change("create", " Projects.2026 ")
        self.assertEqual((reply.status, reply.header("location")), (303, "/folders?done=created"))
        self.assertIn("Projects.2026", self.store.list_mailboxes())
        box = self.world.mailbox("alice@example.org", "Projects.2026")
        box.append(message("Kept"), ())
        self.world.reactor.advance(0)
        self.assertEqual(self.change("rename", "Projects.2026", "Archive.2026").status, 303)
        names = self.store.list_mailboxes()
        self.assertIn("Archive.2026", names)
        self.assertNotIn("Projects.2026", names)
        self.assertEqual(len(self.world.mailbox("alice@example.org", "Archive.2026")
                             .messages()), 1)
        page = self.browser.get("/folders?done=renamed").text
        self.assertIn("Folder renamed.", page)
        self.assertIn('data-folder="Archive.2026"', page)
        self.assertEqual(self.change("delete", "Archive.2026").status, 303)
        self.assertNotIn("Archive.2026", self.store.list_mailboxes())

    def test_bad_names_get_the_storage_reason(self) -> None:
        """Names the storage refuses are refused with its reason, and nothing is created."""
        before = sorted(self.store.list_mailboxes())
        for name, reason in (("a/b", "contains '/'"), ("x..y", "empty level"),
                             ("bell\x07", "control character"), ("", "empty"),
                             ("inbox", "INBOX already")):
            reply = self.change("create", name)
            self.assertEqual(reply.status, 400, name)
            self.assertIn(reason.replace("'", "&#x27;"), reply.text, name)
        self.assertEqual(sorted(self.store.list_mailboxes()), before)

    def test_taken_name_is_refused(self) -> None:
        """Creating or renaming onto an existing folder is refused, nothing changes."""
        self.change("create", "Work")
        self.change("create", "Play")
        self.assertIn("already", self.change("create", "Work").text)
        reply = self.change("rename", "Play", "Work")
        self.assertEqual(reply.status, 400)
        self.assertIn("There is a folder &#x27;Work&#x27; already", reply.text)
        self.assertIn("Play", self.store.list_mailboxes())

    def test_inbox_and_special_use_folders_are_protected(self) -> None:
        """INBOX, Sent, Drafts, Trash... cannot be renamed or deleted; no form offers it."""
        roles = dict(self.store.special_use())
        self.assertTrue(roles)
        for name in ["INBOX", *roles]:
            for action in ("rename", "delete"):
                reply = self.change(action, name, "Elsewhere")
                self.assertEqual(reply.status, 400, (action, name))
                self.assertIn("cannot be renamed or deleted", reply.text)
        self.assertEqual(set(self.store.list_mailboxes()), {"INBOX", *roles})
        page = self.browser.get("/folders").text
        self.assertNotIn('name="name" value="INBOX"', page)
        for name in roles:
            self.assertNotIn(f'name="name" value="{name}"', page)

    def test_changes_need_the_csrf_token(self) -> None:
        """A folder change without the session's token is refused."""
        reply = self.browser.post("/folders", {"action": "create", "name": "Sneaky"})
        self.assertEqual(reply.status, 403)
        self.assertNotIn("Sneaky", self.store.list_mailboxes())
