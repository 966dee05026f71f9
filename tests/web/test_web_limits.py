"""The request body limit: enforced while the body arrives, never after buffering it."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from web_support import csrf_of, make_world, parse_response

LIMIT = 4096


class BodyLimitTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.world = make_world(max_body=LIMIT)
        self.browser = self.world.browser()
        self.browser.sign_in("alice@example.org")
        self.csrf = self.browser.csrf()
        self.cookie = "; ".join(f"{k}={v}" for k, v in self.browser.cookies.items())

    def head(self, extra: str) -> bytes:
        return (f"POST /compose HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nCookie: {self.cookie}\r\n"
                "Content-Type: application/x-www-form-urlencoded\r\n" + extra + "\r\n").encode()

    def test_oversized_content_length_is_refused_before_the_body(self) -> None:
        """A Content-Length over the limit gets 413 and a close with no body sent at all."""
        channel, transport = self.browser.connect()
        channel.dataReceived(self.head(f"Content-Length: {LIMIT + 1}\r\n"
                                       "Expect: 100-continue\r\n"))
        raw = transport.value()
        self.assertTrue(raw.startswith(b"HTTP/1.1 413 "), raw[:80])
        self.assertNotIn(b"100 Continue", raw)
        self.assertTrue(transport.disconnecting)
        reply = parse_response(raw)
        self.assertIn(f"at most {LIMIT} octets", reply.text)
        self.assertEqual(reply.header("connection"), "close")
        # Whatever the client sends anyway is dropped, and nothing is handled.
        channel.dataReceived(b"to=bob%40example.org&subject=x&body=" + b"y" * (LIMIT + 1))
        self.world.reactor.advance(0)
        self.assertEqual(transport.value(), raw)
        self.assertEqual(self.world.mailbox("bob@example.org").messages(), [])

    def test_chunked_body_is_counted_as_it_arrives(self) -> None:
        """A chunked body is refused with 413 the moment it passes the limit, before it ends."""
        channel, transport = self.browser.connect()
        channel.dataReceived(self.head("Transfer-Encoding: chunked\r\n"))
        chunk = b"x" * 1024
        for _ in range(LIMIT // len(chunk)):
            channel.dataReceived(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.assertEqual(transport.value(), b"")  # within the limit: still reading
        channel.dataReceived(b"1\r\nx\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 413 "))
        self.assertTrue(transport.disconnecting)

    def test_body_at_the_limit_is_accepted(self) -> None:
        """A form of exactly the limit is read and handled as usual."""
        fields = f"csrf={self.csrf}&to=bob%40example.org&subject=Limit&body=".encode()
        body = fields + b"z" * (LIMIT - len(fields))
        reply, _ = self.browser.open("POST", "/compose", body, {
            "Content-Type": "application/x-www-form-urlencoded"})
        self.assertEqual(reply.status, 200, reply.text[:300])
        self.assertEqual(len(self.world.mailbox("bob@example.org").messages()), 1)

    def test_message_over_the_size_limit_is_not_sent(self) -> None:
        """A composed message larger than the submission size limit is refused, not sent."""
        world = make_world(max_message_size=2048)
        browser = world.browser()
        browser.sign_in("alice@example.org")
        reply = browser.post_multipart("/compose", {
            "csrf": browser.csrf(), "to": "bob@example.org", "subject": "Big", "body": "see"},
            [("big.bin", "application/octet-stream", bytes(range(256)) * 8)])
        self.assertEqual(reply.status, 400)
        self.assertIn("too large", reply.text)
        self.assertEqual(world.mailbox("bob@example.org").messages(), [])
        self.assertIsNotNone(csrf_of(reply.text))


class FormCostTests(SynchronousTestCase):
    """No form makes the server parse for long: small sign-in bodies, bounded field counts."""

    def setUp(self) -> None:
        self.world = make_world()
        self.browser = self.world.browser()

    def test_sign_in_form_body_is_small(self) -> None:
        """Anyone may post to /signin, so a body past PUBLIC_MAX_BODY is refused unparsed."""
        from pymail.web.app import PUBLIC_MAX_BODY

        self.browser.get("/signin")
        reply = self.browser.post("/signin", {"csrf": "x", "username": "alice@example.org",
                                              "password": "p" * PUBLIC_MAX_BODY})
        self.assertEqual(reply.status, 413)
        self.assertIn(f"at most {PUBLIC_MAX_BODY} octets", reply.text)
        self.assertEqual(self.browser.sign_in("alice@example.org").status, 303)

    def test_multipart_form_with_too_many_parts_is_refused(self) -> None:
        """A multipart body of more than MAX_FORM_FIELDS parts gets 413 before it is parsed."""
        from pymail.web.http import MAX_FORM_FIELDS

        self.browser.sign_in("alice@example.org")
        fields = {"csrf": self.browser.csrf(), "to": "bob@example.org", "subject": "x",
                  "body": "y"}
        fields.update({f"f{n}": "z" for n in range(MAX_FORM_FIELDS)})
        reply = self.browser.post_multipart("/compose", fields)
        self.assertEqual(reply.status, 413)
        self.assertIn(f"at most {MAX_FORM_FIELDS} fields", reply.text)
        self.assertEqual(self.world.mailbox("bob@example.org").messages(), [])

    def test_urlencoded_form_with_too_many_fields_is_refused(self) -> None:
        """An urlencoded body of more than MAX_FORM_FIELDS fields gets 413."""
        from pymail.web.http import MAX_FORM_FIELDS

        self.browser.sign_in("alice@example.org")
        reply = self.browser.post("/mail/INBOX/actions", {
            "csrf": self.browser.csrf(), "action": "read",
            "uid": [str(n) for n in range(MAX_FORM_FIELDS)]})
        self.assertEqual(reply.status, 413)

    def test_malformed_content_length_is_a_bad_request(self) -> None:
        """Negative, non-numeric, repeated or chunked-plus-length bodies get 400 and a close."""
        for extra in ("Content-Length: -5\r\n", "Content-Length: 12abc\r\n",
                      "Content-Length: 3\r\nContent-Length: 9999\r\n",
                      "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n"):
            channel, transport = self.browser.connect()
            channel.dataReceived(b"POST /signin HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
                                 + extra.encode() + b"\r\nabc")
            self.assertTrue(transport.value().startswith(b"HTTP/1.1 400 "), extra)
            self.assertTrue(transport.disconnecting, extra)


class MultipartFormTests(SynchronousTestCase):
    """parse_body reads multipart/form-data (RFC 7578) byte for byte."""

    def parse(self, body: bytes, boundary: str = "XyZ") -> object:
        import io

        from twisted.web.test.requesthelper import DummyRequest

        from pymail.web.http import parse_body

        request = DummyRequest([b""])
        request.content = io.BytesIO(body)
        request.requestHeaders.setRawHeaders(
            b"content-type", [f'multipart/form-data; boundary="{boundary}"'.encode()])
        return parse_body(request, 10 * 1024 * 1024)

    def test_file_contents_come_back_exactly(self) -> None:
        """Line feeds, CR LF, a boundary-like line without CR LF and binary survive unchanged."""
        tricky = (b"\n" * 1000 + b"\r\n--XyZ-not-at-line-start\r\n" + b"x--XyZ\r\n"
                  + bytes(range(256)) + b"\r\n\r\n")
        body = (b"preamble to ignore\r\n--XyZ  \r\n"
                b'Content-Disposition: form-data; name="subject"\r\n\r\n'
                b"Caf\xc3\xa9\r\n--XyZ\r\n"
                b'Content-Disposition: form-data; name="attachment"; filename="t.bin"\r\n'
                b"Content-Type: application/octet-stream\r\n\r\n" + tricky + b"\r\n--XyZ\r\n"
                b'Content-Disposition: form-data; name="attachment"; filename=""\r\n'
                b"Content-Type: application/octet-stream\r\n\r\n\r\n--XyZ\r\n"
                b'Content-Disposition: form-data; name="empty"\r\n\r\n'
                b"\r\n--XyZ--\r\nepilogue")
        form = self.parse(body)
        self.assertEqual(form.fields, {"subject": ["Café"], "empty": [""]})  # type: ignore[attr-defined]
        [upload] = form.files  # type: ignore[attr-defined]
        self.assertEqual((upload.filename, upload.content_type, upload.data),
                         ("t.bin", "application/octet-stream", tricky))

    def test_unterminated_multipart_is_a_bad_request(self) -> None:
        """A body that never closes its last part gets 400, not a half-read form."""
        from pymail.web.http import HTTPError

        with self.assertRaises(HTTPError) as caught:
            self.parse(b'--XyZ\r\nContent-Disposition: form-data; name="a"\r\n\r\nb')
        self.assertEqual(caught.exception.status, 400)
