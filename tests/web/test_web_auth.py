"""Sign-in, sessions, sign-out, expiry, CSRF and the headers every page carries."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from pymail.web.http import PAGE_CSP
from pymail.web.sessions import SessionStore, tokens_match
from pymail.testing import ThreadlessReactor
from web_support import csrf_of, make_world, message


class SessionStoreTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = ThreadlessReactor()
        self.store = SessionStore(self.clock, lifetime=100, idle_timeout=30)
        self.closed: list[str] = []

    def make(self) -> str:
        return self.store.create(object(), lambda: self.closed.append("x")).id  # type: ignore[arg-type]

    def test_session_ends_after_idle_timeout(self) -> None:
        """A session unused for idle_timeout seconds is gone and its avatar released."""
        sid = self.make()
        self.clock.advance(29)
        self.assertIsNotNone(self.store.get(sid))
        self.clock.advance(30)
        self.assertIsNone(self.store.get(sid))
        self.assertEqual(self.closed, ["x"])

    def test_session_ends_after_lifetime_however_active(self) -> None:
        """Activity does not stretch a session past its lifetime."""
        sid = self.make()
        for _ in range(9):
            self.clock.advance(11)
            self.assertIsNotNone(self.store.get(sid))
        self.clock.advance(11)
        self.assertIsNone(self.store.get(sid))

    def test_tokens_compare_exactly(self) -> None:
        """Tokens match only when equal; an empty token never matches."""
        self.assertTrue(tokens_match("abc", "abc"))
        self.assertFalse(tokens_match("abd", "abc"))
        self.assertFalse(tokens_match("", "abc"))
        self.assertFalse(tokens_match(None, "abc"))


class SignInTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.world = make_world()
        self.browser = self.world.browser()

    def test_sign_in_sets_a_strict_http_only_cookie(self) -> None:
        """Sign-in sets an HttpOnly, SameSite=Strict cookie (not Secure over plain HTTP)."""
        reply = self.browser.sign_in("alice@example.org")
        self.assertEqual(reply.status, 303)
        self.assertEqual(reply.header("location"), "/mail/INBOX")
        cookie = next(c for c in reply.headers["set-cookie"] if c.startswith("pymail_session="))
        self.assertIn("HttpOnly", cookie)
        self.assertIn("SameSite=strict", cookie)
        self.assertNotIn("Secure", cookie)
        self.assertEqual(self.browser.get("/mail/INBOX").status, 200)

    def test_cookie_is_secure_over_tls(self) -> None:
        """Over TLS the session cookie also gets the Secure attribute."""
        browser = self.world.browser()
        browser.secure = True
        browser.host = "mail.example.org"
        browser.get("/signin")
        form = browser.get("/signin").text
        reply = browser.post("/signin", {"csrf": csrf_of(form), "username": "alice@example.org",
                                         "password": "alice-secret-1"},
                             headers={"Origin": "https://mail.example.org"})
        cookie = next(c for c in reply.headers["set-cookie"] if c.startswith("pymail_session="))
        self.assertIn("Secure", cookie)
        self.assertIn("HttpOnly", cookie)

    def test_wrong_password_is_refused(self) -> None:
        """A wrong password gets 401, the form again, and no session."""
        reply = self.browser.sign_in("alice@example.org", "wrong-password")
        self.assertEqual(reply.status, 401)
        self.assertIn("Wrong email address or password", reply.text)
        self.assertNotIn("pymail_session", self.browser.cookies)
        self.assertEqual(self.browser.get("/mail/INBOX").status, 303)

    def test_sign_in_without_the_form_token_is_refused(self) -> None:
        """A sign-in POST that did not come from our form (login CSRF) is refused."""
        reply = self.browser.post("/signin", {"username": "alice@example.org",
                                              "password": "alice-secret-1", "csrf": "forged"})
        self.assertEqual(reply.status, 403)
        self.assertNotIn("pymail_session", self.browser.cookies)

    def test_pages_need_a_session(self) -> None:
        """Without a session a page redirects to sign-in and a POST is refused."""
        self.assertEqual(self.browser.get("/mail/INBOX").header("location"), "/signin")
        self.assertEqual(self.browser.post("/mail/INBOX/actions", {"action": "read"}).status, 403)

    def test_sign_out_ends_the_session(self) -> None:
        """After sign-out the old cookie no longer opens anything."""
        self.browser.sign_in("alice@example.org")
        old = dict(self.browser.cookies)
        reply = self.browser.post("/signout", {"csrf": self.browser.csrf()})
        self.assertEqual(reply.header("location"), "/signin")
        self.browser.cookies = old
        self.assertEqual(self.browser.get("/mail/INBOX").status, 303)
        self.assertEqual(len(self.world.app.sessions), 0)

    def test_expired_session_redirects_to_sign_in(self) -> None:
        """A session past its idle timeout sends the browser back to sign-in."""
        self.browser.sign_in("alice@example.org")
        self.world.reactor.advance(601)
        self.assertEqual(self.browser.get("/mail/INBOX").header("location"), "/signin")


class CSRFTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.world = make_world()
        self.world.deliver("alice@example.org", message())
        self.browser = self.world.browser()
        self.browser.sign_in("alice@example.org")

    def flags(self) -> frozenset[str]:
        return self.world.mailbox("alice@example.org").info(1).flags

    def test_post_without_token_is_refused(self) -> None:
        """A state-changing POST without the CSRF token changes nothing."""
        reply = self.browser.post("/mail/INBOX/actions", {"action": "flag", "uid": "1"})
        self.assertEqual(reply.status, 403)
        self.assertNotIn("\\Flagged", self.flags())

    def test_post_with_another_sessions_token_is_refused(self) -> None:
        """The token of another session does not work."""
        other = self.world.browser()
        other.sign_in("bob@example.org")
        reply = self.browser.post("/mail/INBOX/actions",
                                  {"action": "flag", "uid": "1", "csrf": other.csrf()})
        self.assertEqual(reply.status, 403)
        self.assertNotIn("\\Flagged", self.flags())

    def test_post_from_another_origin_is_refused(self) -> None:
        """A POST whose Origin is another site is refused even with the token."""
        reply = self.browser.post("/mail/INBOX/actions",
                                  {"action": "flag", "uid": "1", "csrf": self.browser.csrf()},
                                  headers={"Origin": "http://evil.example"})
        self.assertEqual(reply.status, 403)
        self.assertNotIn("\\Flagged", self.flags())

    def test_post_with_token_is_accepted(self) -> None:
        """The same POST with the session's token and our own Origin works."""
        reply = self.browser.post("/mail/INBOX/actions",
                                  {"action": "flag", "uid": "1", "csrf": self.browser.csrf()},
                                  headers={"Origin": "http://127.0.0.1:8080"})
        self.assertEqual(reply.status, 303)
        self.assertIn("\\Flagged", self.flags())

    def test_multipart_compose_without_token_is_refused(self) -> None:
        """Compose (multipart) without the token sends nothing."""
        reply = self.browser.post_multipart("/compose", {"to": "bob@example.org",
                                                         "subject": "x", "body": "y"})
        self.assertEqual(reply.status, 403)
        self.assertEqual(len(self.world.mailbox("bob@example.org").messages()), 0)


class HeaderTests(SynchronousTestCase):
    def test_every_page_has_the_strict_policy(self) -> None:
        """Every page, errors too, carries the CSP, nosniff and a same-origin referrer policy."""
        world = make_world()
        world.deliver("alice@example.org", message())
        browser = world.browser()
        pages = [browser.get("/signin")]
        browser.sign_in("alice@example.org")
        for path in ("/mail/INBOX", "/mail/INBOX/1", "/compose", "/settings", "/account",
                     "/mail/Nope", "/nowhere"):
            pages.append(browser.get(path))
        for reply in pages:
            self.assertEqual(reply.header("content-security-policy"), PAGE_CSP)
            self.assertEqual(reply.header("x-content-type-options"), "nosniff")
            self.assertEqual(reply.header("referrer-policy"), "same-origin")
            self.assertEqual(reply.header("x-frame-options"), "DENY")
        self.assertEqual([p.status for p in pages[-2:]], [404, 404])
        self.assertIn("script-src 'self'", PAGE_CSP)
        self.assertNotIn("unsafe-inline", PAGE_CSP)

    def test_csrf_field_is_on_every_form(self) -> None:
        """Every POST form on the signed-in pages carries the CSRF token."""
        world = make_world()
        world.deliver("alice@example.org", message())
        browser = world.browser()
        browser.sign_in("alice@example.org")
        for path in ("/mail/INBOX", "/mail/INBOX/1", "/compose", "/account"):
            html = browser.get(path).text
            self.assertEqual(html.count('method="post"'), html.count('name="csrf"'), path)
            csrf_of(html)


class EveryPostRouteTests(SynchronousTestCase):
    """Each state-changing route, present and future, needs the token and our Origin."""

    def setUp(self) -> None:
        self.world = make_world(admins=("alice@example.org",), special_use=True)
        self.browser = self.world.browser()
        self.browser.sign_in("alice@example.org")
        self.csrf = self.browser.csrf()

    def post_paths(self) -> list[str]:
        paths = []
        for route in self.world.app.router.routes:
            if route.method == b"POST":
                path = route.pattern.pattern.strip("^$").replace("([^/]+)", "INBOX")
                self.assertNotIn("(", path, "a POST route this test cannot fill in")
                paths.append(path)
        return paths

    def test_only_sign_in_is_a_public_post(self) -> None:
        """Every POST route but the sign-in form needs a session (and so the CSRF token)."""
        public = [r.pattern.pattern for r in self.world.app.router.routes
                  if r.method == b"POST" and r.public]
        self.assertEqual(public, ["^/signin$"])

    def test_every_post_without_the_token_is_refused(self) -> None:
        """A POST to any route with plausible fields but no token gets 403 and changes nothing."""
        fields = {"action": "create", "name": "Forged", "new": "Forged2", "to": "bob@example.org",
                  "subject": "x", "body": "y", "uid": "1", "password": "x",
                  "new_password": "forged-password-1", "domain": "forged.example"}
        for path in self.post_paths():
            if path == "/signin":
                continue
            self.assertEqual(self.browser.post(path, fields).status, 403, path)
        self.assertNotIn("Forged", self.world.stores.open_store(
            "alice@example.org", "/nonexistent").list_mailboxes())
        self.assertEqual(self.world.mailbox("bob@example.org").messages(), [])
        self.assertEqual(self.browser.get("/mail/INBOX").status, 200)  # still signed in

    def test_every_post_from_another_origin_is_refused(self) -> None:
        """A POST to any route (sign-in too) from another site's page gets 403, token or not."""
        for path in self.post_paths():
            for origin in ("http://evil.example", "null", "http://127.0.0.1:8080.evil.example",
                           "https://127.0.0.1:8080"):
                reply = self.browser.post(path, {"csrf": self.csrf, "action": "create",
                                                 "name": "Forged"},
                                          headers={"Origin": origin})
                self.assertEqual(reply.status, 403, (path, origin))
        self.assertNotIn("Forged", self.world.stores.open_store(
            "alice@example.org", "/nonexistent").list_mailboxes())


class RedirectTests(SynchronousTestCase):
    def test_redirects_stay_on_this_site(self) -> None:
        """A Location that a browser would read as another host becomes "/"."""
        from pymail.web.http import Response

        for location in ("//evil.example/", "/\\evil.example/", "/\\/evil.example",
                         "https://evil.example/", "evil.example", "/\t/evil.example"):
            self.assertEqual(Response.redirect(location).headers["Location"], "/", location)
        self.assertEqual(Response.redirect("/mail/INBOX?done=read").headers["Location"],
                         "/mail/INBOX?done=read")
