"""Tests for pymail.smtp.server: the ESMTP protocol on the MX port."""

from __future__ import annotations

import pytest
from smtp_support import (
    CORPUS,
    USERS,
    AsyncDelivery,
    SlowStoreFactory,
    corpus_message,
    dot_stuff,
    make_server,
    strip_trace_headers,
)
from twisted.trial.unittest import SynchronousTestCase

from pymail.errors import StorageError
from pymail.smtp import replies as R
from pymail.smtp.delivery import LocalDelivery
from pymail.smtp.server import SMTPFactory
from pymail.storage.fsutil import CRLFMessage, to_lf
from pymail.testing import MemoryDirectory

ENVELOPE = b"EHLO client.example.org\r\nMAIL FROM:<sender@remote.example>\r\n"


def transaction(h, rcpts=(b"alice@example.com",), body=b"Subject: t\r\n\r\nhi\r\n"):  # type: ignore[no-untyped-def]
    """Run one whole transaction; give the final reply lines."""
    h.send(b"EHLO client.example.org\r\n")
    h.send(b"MAIL FROM:<sender@remote.example>\r\n")
    for rcpt in rcpts:
        h.send(b"RCPT TO:<" + rcpt + b">\r\n")
    h.send(b"DATA\r\n")
    h.replies()
    h.send(dot_stuff(body))
    return h.replies()


class GreetingTests(SynchronousTestCase):
    def test_greeting(self) -> None:
        """The server greets with 220, its hostname and ESMTP."""
        h = make_server()
        self.assertEqual(h.replies(), ["220 mx.example.com ESMTP pymail"])

    def test_ehlo_lists_extensions(self) -> None:
        """EHLO lists the extensions (SIZE, SMTPUTF8, DSN...) and no AUTH on the MX port."""
        h = make_server(max_message_size=1000)
        h.replies()
        h.send(b"EHLO client.example.org\r\n")
        self.assertEqual(
            h.replies(),
            [
                "250-mx.example.com Hello client.example.org",
                "250-PIPELINING",
                "250-SIZE 1000",
                "250-8BITMIME",
                "250-ENHANCEDSTATUSCODES",
                "250-SMTPUTF8",
                "250-DSN",
                "250 CHUNKING",
            ],
        )

    def test_helo(self) -> None:
        """HELO gets a one-line 250."""
        h = make_server()
        h.replies()
        h.send(b"HELO client.example.org\r\n")
        self.assertEqual(h.replies(), ["250 mx.example.com Hello client.example.org"])

    def test_helo_needs_a_domain(self) -> None:
        """HELO without a usable name gets 501 5.5.4."""
        h = make_server()
        h.replies()
        h.send(b"HELO\r\nEHLO bad name;\r\n")
        self.assertEqual(h.codes(), ["501 5.5.4", "501 5.5.4"])

    def test_simple_commands(self) -> None:
        """NOOP 250, VRFY 252 2.1.5, HELP 214, EXPN 502, RSET 250, QUIT 221 and close."""
        h = make_server()
        h.replies()
        h.send(b"NOOP\r\nVRFY alice\r\nHELP\r\nEXPN list\r\nRSET\r\nQUIT\r\n")
        self.assertEqual(
            h.codes(),
            ["250 2.0.0", "252 2.1.5", "214 2.0.0", "502 5.5.1", "250 2.0.0", "221 2.0.0"],
        )
        self.assertTrue(h.transport.disconnecting)

    def test_unknown_command(self) -> None:
        """An unknown command gets 500 5.5.2."""
        h = make_server()
        h.replies()
        h.send(b"FROB\r\n")
        self.assertEqual(h.codes(), ["500 5.5.2"])

    def test_commands_after_quit_are_ignored(self) -> None:
        """Lines pipelined after QUIT get no reply."""
        h = make_server()
        h.replies()
        h.send(b"QUIT\r\nNOOP\r\n")
        self.assertEqual(h.codes(), ["221 2.0.0"])


class TransactionTests(SynchronousTestCase):
    def test_corpus_messages_stored_byte_exact(self) -> None:
        """Every corpus message is stored exactly as sent, after the two trace headers."""
        names = sorted(p.name for p in CORPUS.glob("msg_*.txt"))
        self.assertTrue(names)
        for name in names:
            h = make_server()
            message = corpus_message(name)
            final = transaction(h, body=message)
            self.assertEqual(len(final), 1, name)
            self.assertTrue(final[0].startswith("250 2.0.0 Ok: queued as "), final)
            [stored] = h.inbox("alice@example.com")
            self.assertEqual(strip_trace_headers(stored), message, name)

    def test_dot_unstuffing(self) -> None:
        """Leading dots doubled by the client are undone; a dot inside a line is kept."""
        h = make_server()
        h.replies()
        h.send(ENVELOPE + b"RCPT TO:<alice@example.com>\r\nDATA\r\n")
        h.send(b"Subject: dots\r\n\r\n..\r\n...two\r\n.x\r\na.b\r\n.\r\n")
        [stored] = h.inbox("alice@example.com")
        self.assertEqual(
            strip_trace_headers(stored), b"Subject: dots\r\n\r\n.\r\n..two\r\nx\r\na.b\r\n"
        )

    def test_empty_message(self) -> None:
        """A message that is just the terminator is stored as empty."""
        h = make_server()
        h.replies()
        h.send(ENVELOPE + b"RCPT TO:<alice@example.com>\r\nDATA\r\n.\r\n")
        self.assertEqual(h.codes()[-1], "250 2.0.0")
        [stored] = h.inbox("alice@example.com")
        self.assertEqual(strip_trace_headers(stored), b"")

    def test_message_split_across_many_chunks(self) -> None:
        """Data fed one octet at a time is assembled and unstuffed the same way."""
        h = make_server()
        h.replies()
        h.send(ENVELOPE + b"RCPT TO:<alice@example.com>\r\nDATA\r\n")
        for octet in b"Subject: s\r\n\r\n..a\r\n\r\n..\r\nend\r\n.\r\n":
            h.send(bytes([octet]))
        [stored] = h.inbox("alice@example.com")
        self.assertEqual(strip_trace_headers(stored), b"Subject: s\r\n\r\n.a\r\n\r\n.\r\nend\r\n")

    def test_trace_headers(self) -> None:
        """Return-Path and Received give sender, HELO, client IP, host, id, recipient, date."""
        h = make_server()
        final = transaction(h)
        queue_id = final[0].rsplit(" ", 1)[1]
        [stored] = h.inbox("alice@example.com")
        self.assertEqual(
            stored.split(b"Subject:")[0],
            b"Return-Path: <sender@remote.example>\r\n"
            b"Received: from client.example.org ([192.0.2.7])\r\n"
            b"\tby mx.example.com (pymail) with ESMTP id " + queue_id.encode() + b"\r\n"
            b"\tfor <alice@example.com>; Fri, 15 Jan 2027 08:00:00 +0000\r\n",
        )

    def test_received_hides_recipients_of_multi_recipient_message(self) -> None:
        """With several recipients Received has no 'for' clause, and each gets the message."""
        h = make_server()
        final = transaction(h, rcpts=(b"alice@example.com", b"bob@example.com"))
        self.assertEqual(final[0][:9], "250 2.0.0")
        [alice] = h.inbox("alice@example.com")
        [bob] = h.inbox("bob@example.com")
        self.assertEqual(alice, bob)
        self.assertNotIn(b"\tfor ", alice)

    def test_helo_gives_smtp_protocol_and_null_sender(self) -> None:
        """After HELO Received says 'with SMTP'; a null sender gives Return-Path: <>."""
        h = make_server()
        h.send(b"HELO c.example.org\r\nMAIL FROM:<>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\n")
        h.send(b"x\r\n.\r\n")
        [stored] = h.inbox("alice@example.com")
        self.assertTrue(stored.startswith(b"Return-Path: <>\r\nReceived: from c.example.org"))
        self.assertIn(b"with SMTP id", stored)

    def test_alias_delivers_once_per_account(self) -> None:
        """An alias expands to its accounts; an account named twice gets one copy."""
        h = make_server()
        transaction(h, rcpts=(b"team@example.com", b"alice@example.com", b"alice+x@example.com"))
        self.assertEqual(len(h.inbox("alice@example.com")), 1)
        self.assertEqual(len(h.inbox("bob@example.com")), 1)

    def test_queue_ids_are_unique(self) -> None:
        """Two messages in one session get different queue ids."""
        h = make_server()
        first = transaction(h)[0]
        second = transaction(h)[0]
        self.assertNotEqual(first, second)

    def test_queue_id_is_base32hex_of_time_counter_and_random_bits(self) -> None:
        """A queue id is the base32hex of 48 bits of milliseconds, a counter and 16 random bits."""
        import base64
        import itertools

        from twisted.internet.task import Clock

        from pymail.smtp.server import QueueIdGenerator

        clock = Clock()
        clock.advance(1_700_000_000.123)
        for counter, rnd in ((0, b"\x00\x00"), (0xFFFF, b"\xff\xff"), (0x1234F, b"\xa5\x5a")):
            ids = QueueIdGenerator(clock, lambda n, rnd=rnd: rnd, itertools.count(counter))
            raw = (1_700_000_000_123).to_bytes(6, "big") + (counter & 0xFFFF).to_bytes(2, "big")
            self.assertEqual(ids(), base64.b32hexencode(raw + rnd).decode("ascii"))

    def test_rset_ends_transaction(self) -> None:
        """After RSET, RCPT needs a new MAIL."""
        h = make_server()
        h.replies()
        h.send(ENVELOPE + b"RSET\r\nRCPT TO:<alice@example.com>\r\n")
        self.assertEqual(h.codes()[-2:], ["250 2.0.0", "503 5.5.1"])


class RecipientTests(SynchronousTestCase):
    def test_unknown_user(self) -> None:
        """An unknown local user gets 550 5.1.1 and a known one is still accepted."""
        h = make_server()
        h.replies()
        h.send(ENVELOPE + b"RCPT TO:<nobody@example.com>\r\nRCPT TO:<alice@example.com>\r\n")
        self.assertEqual(h.codes()[-2:], ["550 5.1.1", "250 2.1.5"])

    def test_relay_denied(self) -> None:
        """A non-local recipient from an unauthenticated client gets 554 5.7.1."""
        h = make_server()
        h.replies()
        h.send(ENVELOPE + b"RCPT TO:<someone@elsewhere.example>\r\n")
        replies = h.replies()
        self.assertEqual(
            replies[-1], "554 5.7.1 Relay access denied for <someone@elsewhere.example>"
        )

    def test_source_routed_relay_denied(self) -> None:
        """A source route through us to another domain is a relay attempt."""
        h = make_server()
        h.replies()
        h.send(ENVELOPE + b"RCPT TO:<@mx.example.com:victim@elsewhere.example>\r\n")
        self.assertEqual(h.codes()[-1], "554 5.7.1")

    def test_percent_hack_is_not_relayed(self) -> None:
        """user%remote@local is just an unknown local part, never relayed."""
        h = make_server()
        h.replies()
        h.send(ENVELOPE + b"RCPT TO:<victim%elsewhere.example@example.com>\r\n")
        self.assertEqual(h.codes()[-1], "550 5.1.1")

    def test_bad_recipient_syntax(self) -> None:
        """A malformed path gets 501 5.1.3 with the reason."""
        h = make_server()
        h.replies()
        h.send(
            ENVELOPE + b"RCPT TO:<a@@example.com>\r\nRCPT TO:<" + b"a" * 65 + b"@example.com>\r\n"
        )
        replies = h.replies()
        self.assertTrue(replies[-2].startswith("501 5.1.3 Bad local part"), replies)
        self.assertEqual(replies[-1], "501 5.1.3 Local part too long (65 octets, max 64)")

    def test_rcpt_parameters_refused(self) -> None:
        """RCPT parameters we do not offer get 555 5.5.4; malformed DSN ones 501 5.5.4."""
        h = make_server()
        h.replies()
        h.send(ENVELOPE + b"RCPT TO:<alice@example.com> XFOO=1\r\n")
        self.assertEqual(h.codes()[-1], "555 5.5.4")
        for params in (b"NOTIFY=NEVER,SUCCESS", b"NOTIFY=SOMETIMES", b"ORCPT=rfc822",
                       b"ORCPT=rfc822;a+zzb"):
            h.send(b"RCPT TO:<alice@example.com> " + params + b"\r\n")
        self.assertEqual(h.codes(), ["501 5.5.4"] * 4)

    def test_rcpt_dsn_parameters_accepted(self) -> None:
        """NOTIFY and ORCPT (RFC 3461) are accepted and kept with the recipient."""
        h = make_server()
        h.replies()
        h.send(ENVELOPE + b"RCPT TO:<alice@example.com> NOTIFY=SUCCESS,FAILURE "
               b"ORCPT=rfc822;Alice+2B1@example.com\r\n")
        self.assertEqual(h.codes()[-1], "250 2.1.5")
        [recipient] = h.protocol._transaction.recipients  # type: ignore[union-attr]
        self.assertEqual(recipient.notify, ("SUCCESS", "FAILURE"))
        self.assertEqual(recipient.orcpt, "rfc822;Alice+1@example.com")

    def test_postmaster_without_domain(self) -> None:
        """RCPT TO:<Postmaster> with no domain is accepted (RFC 5321 section 4.1.1.3)."""
        h = make_server(postmaster="alice@example.com")
        h.replies()
        h.send(ENVELOPE + b"RCPT TO:<Postmaster>\r\n")
        self.assertEqual(h.codes()[-1], "250 2.1.5")

    def test_too_many_recipients(self) -> None:
        """Past max_recipients accepted recipients, RCPT gets 452 4.5.3."""
        h = make_server(max_recipients=2)
        h.replies()
        h.send(ENVELOPE)
        for _ in range(3):
            h.send(b"RCPT TO:<alice@example.com>\r\n")
        self.assertEqual(h.codes()[-3:], ["250 2.1.5", "250 2.1.5", "452 4.5.3"])

    def test_data_after_only_rejected_recipients(self) -> None:
        """DATA when every RCPT was refused gets 554 5.5.1."""
        h = make_server()
        h.replies()
        h.send(ENVELOPE + b"RCPT TO:<nobody@example.com>\r\nDATA\r\n")
        self.assertEqual(h.codes()[-1], "554 5.5.1")

    def test_directory_failure_is_transient(self) -> None:
        """A directory that raises gives 451 4.3.0, and the error is logged."""

        class BrokenDirectory(MemoryDirectory):
            def resolve(self, address: str) -> list[str] | None:
                raise RuntimeError("database down")

        h = make_server()
        h.factory.delivery = LocalDelivery(BrokenDirectory(domains={"example.com"}), h.stores, "/d")
        h.replies()
        h.send(ENVELOPE + b"RCPT TO:<alice@example.com>\r\n")
        self.assertEqual(h.codes()[-1], "451 4.3.0")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class MailTests(SynchronousTestCase):
    def test_size_parameter_over_limit(self) -> None:
        """MAIL with SIZE above the limit gets 552 5.3.4; at the limit it is accepted."""
        h = make_server(max_message_size=1000)
        h.replies()
        h.send(b"EHLO c.example.org\r\nMAIL FROM:<a@b.example> SIZE=1001\r\n")
        self.assertEqual(h.codes()[-1], "552 5.3.4")
        h.send(b"MAIL FROM:<a@b.example> SIZE=1000 BODY=8BITMIME\r\n")
        self.assertEqual(h.codes(), ["250 2.1.0"])

    def test_mail_parameters(self) -> None:
        """Unknown parameters get 555 5.5.4; bad values and repeats 501 5.5.4."""
        h = make_server()
        h.replies()
        h.send(b"EHLO c.example.org\r\n")
        h.replies()
        for params in (b"XFOO", b"BODY=BINARYMIME", b"SIZE=big", b"SIZE=1 SIZE=2", b"=x"):
            h.send(b"MAIL FROM:<a@b.example> " + params + b"\r\n")
        for params in (b"SIZE", b"BODY", b"SMTPUTF8=yes", b"RET=ALL", b"ENVID=a+zz"):
            h.send(b"MAIL FROM:<a@b.example> " + params + b"\r\n")
        self.assertEqual(h.codes(), ["555 5.5.4"] + ["501 5.5.4"] * 9)

    def test_mail_smtputf8_and_dsn_parameters(self) -> None:
        """SMTPUTF8 allows a UTF-8 sender; RET and ENVID are kept for the DSNs."""
        h = make_server()
        h.replies()
        h.send("EHLO c.example.org\r\nMAIL FROM:<jöran@bücher.example> SMTPUTF8 RET=HDRS "
               "ENVID=QQ+2B1\r\n".encode())
        self.assertEqual(h.codes()[-1], "250 2.1.0")
        transaction = h.protocol._transaction
        assert transaction is not None
        self.assertEqual((transaction.smtputf8, transaction.ret, transaction.envid),
                         (True, "HDRS", "QQ+1"))
        self.assertEqual(transaction.sender.domain, "xn--bcher-kva.example")

    def test_bad_sender_syntax(self) -> None:
        """A malformed reverse-path gets 501 5.1.7."""
        h = make_server()
        h.replies()
        h.send(b"EHLO c.example.org\r\nMAIL FROM:<a b@c>\r\nMAIL TO:<a@b.example>\r\n")
        self.assertEqual(h.codes()[-2:], ["501 5.1.7", "501 5.5.4"])

    def test_mail_with_space_after_colon(self) -> None:
        """MAIL FROM: <addr> with a space is tolerated."""
        h = make_server()
        h.replies()
        h.send(b"EHLO c.example.org\r\nMAIL FROM: <a@b.example>\r\n")
        self.assertEqual(h.codes()[-1], "250 2.1.0")


class SequenceTests(SynchronousTestCase):
    def test_bad_sequence(self) -> None:
        """MAIL before EHLO, RCPT before MAIL, DATA before RCPT and nested MAIL get 503 5.5.1."""
        h = make_server()
        h.replies()
        h.send(b"MAIL FROM:<a@b.example>\r\nEHLO c.example.org\r\nRCPT TO:<alice@example.com>\r\n")
        h.send(b"DATA\r\nMAIL FROM:<a@b.example>\r\nDATA\r\nMAIL FROM:<a@b.example>\r\n")
        self.assertEqual(
            h.codes(),
            ["503 5.5.1", "250", "503 5.5.1", "503 5.5.1", "250 2.1.0", "503 5.5.1", "503 5.5.1"],
        )

    def test_auth_not_on_mx(self) -> None:
        """AUTH on the MX port gets 502 5.5.1."""
        h = make_server()
        h.replies()
        h.send(b"EHLO c.example.org\r\nAUTH PLAIN\r\n")
        self.assertEqual(h.codes()[-1], "502 5.5.1")


class LineTests(SynchronousTestCase):
    def test_long_command_line(self) -> None:
        """A command line over 512 octets gets 500 5.5.2; the session goes on."""
        h = make_server()
        h.replies()
        h.send(b"NOOP " + b"x" * 505 + b"\r\nNOOP " + b"x" * 506 + b"\r\nNOOP\r\n")
        self.assertEqual(h.codes(), ["250 2.0.0", "500 5.5.2", "250 2.0.0"])

    def test_mail_line_may_be_longer_for_parameters(self) -> None:
        """MAIL may exceed 512 octets with parameters, up to 1024."""
        h = make_server()
        h.replies()
        h.send(b"EHLO c.example.org\r\nMAIL FROM:<a@b.example>" + b" " * 600 + b"\r\n")
        self.assertEqual(h.codes()[-1], "250 2.1.0")
        h.send(b"RSET\r\nMAIL FROM:<a@b.example>" + b" " * 1100 + b"\r\n")
        self.assertEqual(h.codes()[-1], "500 5.5.2")

    def test_huge_line_is_discarded_to_its_end(self) -> None:
        """A line past the buffer limit gets one 500 5.5.2 and the next line is read."""
        h = make_server()
        h.replies()
        h.send(b"NOOP " + b"x" * 20000)
        h.send(b"y" * 20000 + b"\r")
        h.send(b"\nNOOP\r\n")
        self.assertEqual(h.codes(), ["500 5.5.2", "250 2.0.0"])

    def test_huge_line_followed_by_pipelined_command(self) -> None:
        """A too-long line arriving with the next command in one chunk: that command is answered."""
        h = make_server()
        h.replies()
        h.send(b"NOOP " + b"x" * 20000 + b"\r\nNOOP\r\n")
        self.assertEqual(h.codes(), ["500 5.5.2", "250 2.0.0"])

    def test_bare_lf_in_command(self) -> None:
        """A bare LF does not end a command: the merged line gets 500 5.5.2."""
        h = make_server()
        h.replies()
        h.send(b"NOOP\nNOOP\r\n")
        self.assertEqual(h.codes(), ["500 5.5.2"])

    def test_too_many_errors_closes(self) -> None:
        """After max_errors error replies the server says 421 and closes."""
        h = make_server(max_errors=3)
        h.replies()
        h.send(b"FROB\r\nFROB\r\nFROB\r\nNOOP\r\n")
        self.assertEqual(h.codes(), ["500 5.5.2", "500 5.5.2", "500 5.5.2", "421 4.7.0"])
        self.assertTrue(h.transport.disconnecting)


class DataTests(SynchronousTestCase):
    def test_oversize_message(self) -> None:
        """A message over the limit is read to its end, not stored, and gets 552 5.3.4."""
        h = make_server(max_message_size=100)
        h.replies()
        h.send(ENVELOPE + b"RCPT TO:<alice@example.com>\r\nDATA\r\n")
        h.replies()
        h.send(b"x" * 60 + b"\r\n" + b"y" * 60 + b"\r\n.\r\nNOOP\r\n")
        self.assertEqual(h.codes(), ["552 5.3.4", "250 2.0.0"])
        self.assertEqual(h.inbox("alice@example.com"), [])

    def test_message_at_size_limit(self) -> None:
        """A message of exactly the limit is accepted."""
        h = make_server(max_message_size=100)
        final = transaction(h, body=b"x" * 98 + b"\r\n")
        self.assertEqual(final[0][:9], "250 2.0.0")

    def test_smuggling_sequences_do_not_end_data(self) -> None:
        """Bare-LF/CR dot lines don't end DATA; the message is refused at the real end."""
        for sequence in (b"\n.\n", b"\r.\r", b"\r\n.\n", b"\n.\r\n"):
            h = make_server()
            h.replies()
            h.send(ENVELOPE + b"RCPT TO:<alice@example.com>\r\nDATA\r\n")
            h.replies()
            h.send(b"Subject: a\r\n\r\nbody" + sequence)
            h.send(b"MAIL FROM:<evil@remote.example>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n")
            self.assertEqual(h.replies(), [], sequence)
            h.send(b"smuggled\r\n.\r\n")
            self.assertEqual(h.codes(), ["550 5.6.0"], sequence)
            self.assertEqual(h.inbox("alice@example.com"), [])
            self.assertEqual(h.inbox("bob@example.com"), [])

    def test_accepted_messages_reach_delivery_as_crlf_messages(self) -> None:
        """DATA and BDAT hand delivery a CRLFMessage, still one with a Delivered-To line added."""
        seen: list[tuple[str, bytes]] = []

        class Recording(LocalDelivery):
            def _deliver_one(self, account, message, internaldate):  # type: ignore[no-untyped-def]
                seen.append((account, message))
                return super()._deliver_one(account, message, internaldate)

        h = make_server()
        h.factory.delivery = Recording(h.directory, h.stores, "/data")
        body = b"Subject: a\r\n\r\n.dot\r\nline\r\n"
        transaction(h, body=body)
        h.send(ENVELOPE + b"RCPT TO:<bob+tag@example.com>\r\n"
               + b"BDAT %d LAST\r\n" % len(body) + body)
        self.assertEqual(h.codes()[-1], "250 2.0.0")
        [(first, data), (second, chunked)] = seen
        assert (first, second) == ("alice@example.com", "bob@example.com")
        assert type(data) is CRLFMessage and type(chunked) is CRLFMessage
        assert data.endswith(b"\r\n" + body) and chunked.endswith(b"\r\n" + body)
        assert b"\r\nDelivered-To: bob+tag@example.com\r\n" in b"\r\n" + chunked
        assert to_lf(chunked) == bytes(chunked).replace(b"\r\n", b"\n")

    def test_pipelined_commands_after_data(self) -> None:
        """Commands sent in the same chunk as the end of data are answered after the 250."""
        h = make_server()
        h.replies()
        h.send(ENVELOPE + b"RCPT TO:<alice@example.com>\r\nDATA\r\n")
        h.replies()
        h.send(b"hello\r\n.\r\nRSET\r\nQUIT\r\n")
        self.assertEqual(h.codes(), ["250 2.0.0", "250 2.0.0", "221 2.0.0"])


class PipeliningTests(SynchronousTestCase):
    def test_pipelined_group_replies_leave_in_one_send(self) -> None:
        """The replies to one pipelined group reach the transport in one write, in order."""
        h = make_server()
        h.replies()
        writes: list[list[bytes]] = []
        h.transport.writeSequence = lambda pieces: writes.append(list(pieces))  # type: ignore[method-assign]
        h.send(ENVELOPE + b"RCPT TO:<alice@example.com>\r\nDATA\r\n")
        self.assertEqual(len(writes), 1)
        lines = b"".join(writes[0]).decode().split("\r\n")
        self.assertEqual(
            [line[:9] for line in lines if line and line[3] == " "],
            ["250 CHUNK", "250 2.1.0", "250 2.1.5", "354 End d"],
        )

    def test_replies_in_order_with_async_recipient_checks(self) -> None:
        """Pipelined MAIL/RCPT/RCPT/DATA are answered in order while checks are pending."""
        h = make_server()
        policy = AsyncDelivery(h.factory.delivery)  # type: ignore[arg-type]
        h.factory.delivery = policy
        h.replies()
        h.send(
            b"EHLO c.example.org\r\nMAIL FROM:<a@b.example>\r\n"
            b"RCPT TO:<nobody@example.com>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\n"
            b"Subject: p\r\n\r\nbody\r\n.\r\nQUIT\r\n"
        )
        self.assertEqual(h.codes(), ["250", "250 2.1.0"])
        self.assertEqual(len(policy.pending), 1, "the second RCPT must wait for the first")
        policy.answer()
        self.assertEqual(h.codes(), ["550 5.1.1"])
        self.assertEqual(len(policy.pending), 1)
        policy.answer()
        self.assertEqual(h.codes(), ["250 2.1.5", "354", "250 2.0.0", "221 2.0.0"])
        [stored] = h.inbox("alice@example.com")
        self.assertTrue(stored.endswith(b"Subject: p\r\n\r\nbody\r\n"))

    def test_transport_paused_while_waiting(self) -> None:
        """While a command waits, input is buffered; past the hold limit the socket pauses."""
        from pymail.smtp.server import HOLD_BUFFER_LIMIT

        h = make_server()
        policy = AsyncDelivery(h.factory.delivery)  # type: ignore[arg-type]
        h.factory.delivery = policy
        h.send(ENVELOPE + b"RCPT TO:<alice@example.com>\r\n")
        self.assertEqual(h.transport.producerState, "producing")
        h.send(b"NOOP\r\n" * (HOLD_BUFFER_LIMIT // 6 + 1))
        self.assertEqual(h.transport.producerState, "paused")
        h.replies()
        policy.answer()
        self.assertEqual(h.transport.producerState, "producing")
        self.assertEqual(h.codes()[:3], ["250 2.1.5", "250 2.0.0", "250 2.0.0"])


class DurabilityTests(SynchronousTestCase):
    def slow_server(self):  # type: ignore[no-untyped-def]
        slow = SlowStoreFactory()
        h = make_server()
        h.factory.delivery = LocalDelivery(h.directory, slow, "/data")
        h.replies()
        h.send(ENVELOPE + b"RCPT TO:<alice@example.com>\r\nDATA\r\n")
        h.replies()
        h.send(b"Subject: d\r\n\r\nbody\r\n.\r\nNOOP\r\n")
        return h, slow.mailbox

    def test_no_250_until_append_fires(self) -> None:
        """250 after DATA is sent only once the store's append Deferred fires."""
        h, mailbox = self.slow_server()
        self.assertEqual(h.replies(), [])
        [(message, d)] = mailbox.appends
        self.assertTrue(message.endswith(b"Subject: d\r\n\r\nbody\r\n"))
        d.callback(1)
        self.assertEqual(h.codes(), ["250 2.0.0", "250 2.0.0"])

    def test_half_close_still_answers_pipelined_commands(self) -> None:
        """After the client's EOF, commands pipelined behind a slow store are still answered."""
        h, mailbox = self.slow_server()
        h.send(b"MAIL FROM:<a@remote.example>\r\nRCPT TO:<bob@example.com>\r\n")
        h.protocol.readConnectionLost()
        self.assertFalse(h.transport.disconnecting)
        mailbox.appends[0][1].callback(1)
        self.assertEqual(h.codes(), ["250 2.0.0", "250 2.0.0", "250 2.1.0", "250 2.1.5"])
        self.assertTrue(h.transport.disconnecting)

    def test_half_close_when_idle_closes(self) -> None:
        """A client's EOF with nothing left to answer closes the connection at once."""
        h = make_server()
        h.send(b"EHLO client.example.org\r\nNOOP\r\nunfinished")
        h.protocol.readConnectionLost()
        self.assertEqual(h.codes(), ["220", "250", "250 2.0.0"])
        self.assertTrue(h.transport.disconnecting)
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_failed_append_gives_451(self) -> None:
        """A failed append gives 451 4.3.0, is logged, and the session goes on."""
        h, mailbox = self.slow_server()
        mailbox.appends[0][1].errback(StorageError("disk full"))
        self.assertEqual(h.codes(), ["451 4.3.0", "250 2.0.0"])
        self.assertEqual(len(self.flushLoggedErrors(StorageError)), 1)

    def test_no_timeout_while_storing(self) -> None:
        """The idle timeout does not run while the server itself is busy storing."""
        h, mailbox = self.slow_server()
        h.clock.advance(h.factory.timeout * 2)
        self.assertFalse(h.transport.disconnecting)
        mailbox.appends[0][1].callback(1)
        self.assertEqual(h.codes(), ["250 2.0.0", "250 2.0.0"])

    def test_unexpected_delivery_error_gives_451(self) -> None:
        """A policy that raises at deliver gives 451 4.3.0 and no traceback on the wire."""

        class Exploding(LocalDelivery):
            def deliver(self, accounts, message, *, internaldate=None, envelope=None):  # type: ignore[no-untyped-def]
                raise ZeroDivisionError("bug")

        h = make_server()
        h.factory.delivery = Exploding(h.directory, h.stores, "/data")
        final = transaction(h)
        self.assertEqual(final, ["451 4.3.0 Could not store the message, try again later"])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_unexpected_recipient_check_error_gives_451(self) -> None:
        """A policy that raises at RCPT gives 451 4.3.0, is logged, and the session goes on."""

        class Exploding(LocalDelivery):
            def check_recipient(self, address, *, authenticated_as=None):  # type: ignore[no-untyped-def]
                raise ZeroDivisionError("bug")

        h = make_server()
        h.factory.delivery = Exploding(h.directory, h.stores, "/data")
        h.replies()
        h.send(ENVELOPE + b"RCPT TO:<alice@example.com>\r\nNOOP\r\n")
        self.assertEqual(h.codes(), ["250", "250 2.1.0", "451 4.3.0", "250 2.0.0"])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)


class TimeoutTests(SynchronousTestCase):
    def test_idle_timeout(self) -> None:
        """A silent client gets 421 4.4.2 and is disconnected after the timeout."""
        h = make_server(timeout=60)
        h.replies()
        h.clock.advance(59)
        self.assertFalse(h.transport.disconnecting)
        h.send(b"NOOP\r\n")
        h.clock.advance(59)
        self.assertFalse(h.transport.disconnecting)
        h.clock.advance(1)
        self.assertEqual(h.codes(), ["250 2.0.0", "421 4.4.2"])
        self.assertTrue(h.transport.disconnecting)

    def test_timeout_during_data(self) -> None:
        """A client that stops in the middle of DATA times out too."""
        h = make_server(timeout=60)
        h.replies()
        h.send(ENVELOPE + b"RCPT TO:<alice@example.com>\r\nDATA\r\npartial")
        h.clock.advance(60)
        self.assertEqual(h.codes()[-1], "421 4.4.2")
        self.assertEqual(h.inbox("alice@example.com"), [])

    def test_timeout_counts_from_the_end_of_a_slow_command(self) -> None:
        """A store slower than the timeout does not close the session: silence counts after it."""
        h, mailbox = DurabilityTests.slow_server(self)  # type: ignore[arg-type]
        h.clock.advance(h.factory.timeout + 1)
        mailbox.appends[0][1].callback(1)
        self.assertEqual(h.codes(), ["250 2.0.0", "250 2.0.0"])
        h.clock.advance(h.factory.timeout - 1)
        self.assertFalse(h.transport.disconnecting)
        h.clock.advance(1)
        self.assertEqual(h.codes(), ["421 4.4.2"])

    def test_connection_lost_cancels_timeout(self) -> None:
        """Losing the connection leaves no timer behind."""
        h = make_server()
        h.protocol.connectionLost(None)
        self.assertEqual(h.clock.getDelayedCalls(), [])


class FactoryTests(SynchronousTestCase):
    def test_bad_mode(self) -> None:
        """An unknown mode, or submission without a portal, is refused at construction."""
        policy = LocalDelivery(MemoryDirectory(), None, "/d")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="'mx' or 'submission'"):
            SMTPFactory("h", policy, None, mode="lmtp")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="needs a portal"):
            SMTPFactory("h", policy, None, mode="submission")  # type: ignore[arg-type]

    def test_reply_constants_are_used(self) -> None:
        """The relay-denied reply on the wire is the named constant."""
        h = make_server()
        h.replies()
        h.send(ENVELOPE + b"RCPT TO:<x@elsewhere.example>\r\n")
        expected = R.RELAY_DENIED.format(address="x@elsewhere.example").lines()
        self.assertEqual(h.replies()[-1:], expected)
        self.assertIn("alice@example.com", USERS)


class ChunkingTests(SynchronousTestCase):
    def test_bdat_chunks_stored_byte_exact(self) -> None:
        """BDAT chunks (pipelined, split anywhere) make one message, stored byte for byte."""
        h = make_server()
        h.replies()
        message = corpus_message("msg_07.txt")
        first, second = message[:100], message[100:]
        wire = (ENVELOPE + b"RCPT TO:<alice@example.com>\r\n"
                + b"BDAT %d\r\n" % len(first) + first
                + b"BDAT %d LAST\r\n" % len(second) + second + b"NOOP\r\n")
        for i in range(0, len(wire), 37):
            h.send(wire[i:i + 37])
        codes = h.codes()
        self.assertEqual(codes[-4:], ["250 2.1.5", "250 2.0.0", "250 2.0.0", "250 2.0.0"])
        [stored] = h.inbox("alice@example.com")
        self.assertEqual(strip_trace_headers(stored), message)

    def test_bdat_refusals_consume_the_chunk(self) -> None:
        """A BDAT without recipients is refused after its octets are read, not run as commands."""
        h = make_server()
        h.replies()
        h.send(ENVELOPE + b"BDAT 12 LAST\r\nQUIT\r\nQUIT\r\nNOOP\r\n")
        self.assertEqual(h.codes()[-2:], ["503 5.5.1", "250 2.0.0"])
        self.assertFalse(h.transport.disconnecting)

    def test_bdat_bare_lf_and_size(self) -> None:
        """A BDAT message with a bare LF is 550 5.6.0; one past the limit 552 5.3.4."""
        h = make_server(max_message_size=1024)
        h.replies()
        rcpt = b"RCPT TO:<alice@example.com>\r\n"
        h.send(ENVELOPE + rcpt + b"BDAT 8 LAST\r\na\nb\r\nc\r\n")
        self.assertEqual(h.codes()[-1], "550 5.6.0")
        h.send(ENVELOPE + rcpt + b"BDAT 2000\r\n" + b"x" * 2000 + b"NOOP\r\n")
        self.assertEqual(h.codes()[-2:], ["552 5.3.4", "250 2.0.0"])
        self.assertEqual(h.inbox("alice@example.com"), [])

    def test_bdat_bad_size_closes(self) -> None:
        """A BDAT whose size cannot be read closes the connection (the data cannot be skipped)."""
        h = make_server()
        h.replies()
        h.send(ENVELOPE + b"RCPT TO:<alice@example.com>\r\nBDAT lots\r\nRCPT TO:<x@y.z>\r\n")
        self.assertEqual(h.codes()[-1], "501 5.5.4")
        self.assertTrue(h.transport.disconnecting)

    def test_data_after_bdat_refused(self) -> None:
        """DATA in a transaction that started with BDAT is a bad sequence."""
        h = make_server()
        h.replies()
        h.send(ENVELOPE + b"RCPT TO:<alice@example.com>\r\nBDAT 3\r\nab\nDATA\r\n")
        self.assertEqual(h.codes()[-2:], ["250 2.0.0", "503 5.5.1"])


class TextLineLimitTests(SynchronousTestCase):
    def test_long_text_line_refused(self) -> None:
        """A DATA line over 1000 octets gets 500 5.5.2 after the end of data; nothing stored."""
        h = make_server()
        h.replies()
        h.send(ENVELOPE + b"RCPT TO:<alice@example.com>\r\nDATA\r\n")
        h.send(b"Subject: x\r\n\r\n" + b"z" * 999 + b"\r\n.\r\nNOOP\r\n")
        self.assertEqual(h.codes()[-2:], ["500 5.5.2", "250 2.0.0"])
        self.assertEqual(h.inbox("alice@example.com"), [])
