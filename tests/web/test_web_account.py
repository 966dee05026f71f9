"""Password change, admin pages, client settings and Thunderbird autoconfig."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from pymail.config import from_mapping
from pymail.directory.files import FileDirectory
from pymail.directory.passwords import hash_password, verify_password
from pymail.web.site import client_settings
from web_support import make_world


class PasswordTests(SynchronousTestCase):
    def setUp(self) -> None:
        path = self.mktemp()
        os.makedirs(path)
        self.directory = FileDirectory(path)
        self.directory.add_domain("example.org")
        self.directory.add_user("alice@example.org", hash_password("alice-secret-1"))
        self.world = make_world(directory=self.directory)
        self.browser = self.world.browser()
        self.browser.sign_in("alice@example.org")

    def change(self, current: str, new: str, confirm: str | None = None) -> object:
        return self.browser.post("/account/password", {
            "csrf": self.browser.csrf(), "current": current, "new": new,
            "confirm": new if confirm is None else confirm})

    def stored(self) -> str:
        entry = self.directory.user("alice@example.org")
        assert entry is not None
        return entry.password_hash

    def test_password_change_needs_the_current_password(self) -> None:
        """A wrong current password, a mismatch or a short password change nothing."""
        before = self.stored()
        for args, text in ((("wrong-password", "new-password-1"), "current password is wrong"),
                           (("alice-secret-1", "new-password-1", "other"), "differ"),
                           (("alice-secret-1", "short"), "too short")):
            reply = self.change(*args)
            self.assertEqual(reply.status, 400)  # type: ignore[attr-defined]
            self.assertIn(text, reply.text)  # type: ignore[attr-defined]
        self.assertEqual(self.stored(), before)

    def test_password_change_stores_a_new_hash_and_ends_other_sessions(self) -> None:
        """The new password is stored hashed; other sessions of the account end."""
        other = self.world.browser()
        other.sign_in("alice@example.org")
        reply = self.change("alice-secret-1", "a-much-longer-password")
        self.assertEqual(reply.header("location"), "/account?done=password")  # type: ignore[attr-defined]
        self.assertTrue(verify_password(self.stored(), "a-much-longer-password"))
        passwd = Path(self.directory.data_dir) / "passwd"
        self.assertNotIn("a-much-longer-password", passwd.read_text())
        self.assertEqual(other.get("/mail/INBOX").status, 303)
        self.assertEqual(self.browser.get("/mail/INBOX").status, 200)


class AdminTests(SynchronousTestCase):
    def setUp(self) -> None:
        path = self.mktemp()
        os.makedirs(path)
        self.directory = FileDirectory(path)
        self.directory.add_domain("example.org")
        self.world = make_world(admins=("alice@example.org",), directory=self.directory)
        self.admin = self.world.browser()
        self.admin.sign_in("alice@example.org")
        self.csrf = self.admin.csrf()

    def test_non_admin_is_refused(self) -> None:
        """Someone not in [web] admins gets 403 on every admin page and changes nothing."""
        bob = self.world.browser()
        bob.sign_in("bob@example.org")
        self.assertEqual(bob.get("/admin").status, 403)
        reply = bob.post("/admin/domains", {"csrf": bob.csrf(), "action": "add",
                                            "domain": "evil.example"})
        self.assertEqual(reply.status, 403)
        self.assertNotIn("evil.example", self.directory.domains())
        self.assertNotIn('href="/admin"', bob.get("/mail/INBOX").text)

    def test_admin_manages_domains_users_and_aliases(self) -> None:
        """Add a domain, a user (hashed password), an alias; disable and delete them."""
        def post(path: str, **fields: str) -> object:
            reply = self.admin.post(path, {"csrf": self.csrf, **fields})
            self.assertEqual(reply.status, 303, reply.text)
            return reply

        post("/admin/domains", action="add", domain="new.example")
        post("/admin/users", action="add", address="dave@new.example",
             password="dave-password-1")
        post("/admin/aliases", action="add", alias="team@new.example",
             targets="dave@new.example, alice@example.org")
        self.assertIn("new.example", self.directory.domains())
        entry = self.directory.user("dave@new.example")
        assert entry is not None
        self.assertTrue(verify_password(entry.password_hash, "dave-password-1"))
        self.assertEqual(self.directory.aliases()["team@new.example"],
                         ["dave@new.example", "alice@example.org"])
        page = self.admin.get("/admin").text
        self.assertIn("dave@new.example", page)
        self.assertIn("team@new.example", page)
        post("/admin/users", action="disable", address="dave@new.example")
        self.assertFalse(self.directory.has_user("dave@new.example"))
        post("/admin/aliases", action="delete", alias="team@new.example")
        post("/admin/users", action="delete", address="dave@new.example")
        self.assertIsNone(self.directory.user("dave@new.example"))

    def test_disabling_deleting_or_resetting_a_user_ends_their_web_sessions(self) -> None:
        """Disable, delete and set password each sign the user's open browsers out at once."""
        from pymail.directory.passwords import hash_password, scram_credential

        self.directory.add_user("bob@example.org", hash_password("bob-secret-22"),
                                scram_credential("bob-secret-22"))
        for action in ("disable", "password", "delete"):
            bob = self.world.browser()
            bob.sign_in("bob@example.org")  # (the test portal still lets him in)
            self.assertEqual(bob.get("/mail/INBOX").status, 200)
            reply = self.admin.post("/admin/users", {
                "csrf": self.csrf, "action": action, "address": "Bob@example.org ",
                "password": "a-new-password-1"})
            self.assertEqual(reply.status, 303, (action, reply.text[:300]))
            self.assertEqual(bob.get("/mail/INBOX").status, 303, action)  # to /signin
            self.assertEqual(self.admin.get("/mail/INBOX").status, 200)
            if action == "disable":
                self.directory.set_disabled("bob@example.org", False)

    def test_directory_errors_are_shown(self) -> None:
        """A refused operation shows the directory's reason with 400."""
        reply = self.admin.post("/admin/users", {"csrf": self.csrf, "action": "add",
                                                 "address": "x@nowhere.example",
                                                 "password": "long-enough-pw"})
        self.assertEqual(reply.status, 400)
        self.assertIn("nowhere.example is not a local domain", reply.text)


class ClientSetupTests(SynchronousTestCase):
    def test_autoconfig_lists_the_services(self) -> None:
        """The autoconfig file names the host, ports and security of IMAP, POP3 and SMTP."""
        reply = make_world().browser().get(
            "/.well-known/autoconfig/mail/config-v1.1.xml?emailaddress=alice%40example.org")
        self.assertEqual(reply.status, 200)
        self.assertEqual(reply.header("content-type"), "application/xml; charset=utf-8")
        root = ET.fromstring(reply.body)
        provider = root.find("emailProvider")
        assert provider is not None
        self.assertEqual(provider.get("id"), "example.org")
        servers = [(s.get("type"), s.findtext("hostname"), s.findtext("port"),
                    s.findtext("socketType"), s.findtext("username"))
                   for s in provider if s.tag in ("incomingServer", "outgoingServer")]
        self.assertEqual(servers, [
            ("imap", "mail.example.org", "143", "STARTTLS", "%EMAILADDRESS%"),
            ("imap", "mail.example.org", "993", "SSL", "%EMAILADDRESS%"),
            ("pop3", "mail.example.org", "110", "STARTTLS", "%EMAILADDRESS%"),
            ("smtp", "mail.example.org", "587", "STARTTLS", "%EMAILADDRESS%"),
        ])

    def test_autoconfig_ignores_a_hostile_address(self) -> None:
        """A crafted emailaddress cannot inject XML."""
        reply = make_world().browser().get(
            '/.well-known/autoconfig/mail/config-v1.1.xml?emailaddress=a%40x%22%3E%3Cevil%2F%3E')
        root = ET.fromstring(reply.body)
        self.assertIsNone(root.find(".//evil"))
        self.assertEqual(root.find("emailProvider").get("id"), "mail.example.org")  # type: ignore[union-attr]

    def test_folder_named_like_the_autoconfig_file_is_not_shadowed(self) -> None:
        """A folder called config-v1.1.xml opens as a folder; autoconfig is only on its path."""
        world = make_world()
        store = world.stores.open_store("alice@example.org", "/nonexistent")
        store.create_mailbox("config-v1.1.xml")
        world.reactor.advance(0)
        browser = world.browser()
        browser.sign_in("alice@example.org")
        reply = browser.get("/mail/config-v1.1.xml")
        self.assertEqual(reply.status, 200)
        self.assertEqual(reply.header("content-type"), "text/html; charset=utf-8")
        self.assertIn('data-folder="config-v1.1.xml"', reply.text)
        self.assertNotIn("clientConfig", reply.text)
        signed_out = world.browser().get("/mail/config-v1.1.xml?emailaddress=a%40example.org")
        self.assertEqual((signed_out.status, signed_out.header("location")), (303, "/signin"))
        self.assertEqual(world.browser().get(
            "/.well-known/autoconfig/mail/config-v1.1.xml").header("content-type"),
            "application/xml; charset=utf-8")

    def test_settings_page_shows_ports(self) -> None:
        """The settings page tells the user name and each service's port."""
        browser = make_world().browser()
        browser.sign_in("alice@example.org")
        page = browser.get("/settings").text
        self.assertIn("<strong>alice@example.org</strong>", page)
        self.assertIn("<td>IMAP (incoming)</td><td>mail.example.org</td><td>993</td>", page)

    def test_client_settings_from_listeners(self) -> None:
        """Ports come from the endpoint strings; UNIX sockets are left out."""
        config = from_mapping({
            "hostname": "mx.example.org",
            "imap": {"listen": ["tcp:143", "unix:/run/imap.sock"]},
            "pop3": {"listen": []},
            "submission": {"listen": ["tcp:587:interface=0.0.0.0"]},
        }, "test.toml")
        settings = client_settings(config)
        self.assertEqual(settings.hostname, "mx.example.org")
        self.assertEqual(settings.imap, ((143, "plain"),))
        self.assertEqual(settings.pop3, ())
        self.assertEqual(settings.submission, ((587, "plain"),))
