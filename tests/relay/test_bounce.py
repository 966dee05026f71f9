"""Tests for pymail.relay.bounce: the RFC 3464 / RFC 6533 report and the NOTIFY rules."""

from __future__ import annotations

import email
import email.policy

from pymail.relay.bounce import (
    DELAYED,
    DELIVERED,
    FAILED,
    Notice,
    make_dsn,
    status_of,
    wants_notice,
)
from pymail.relay.queue import QueuedMessage, QueuedRecipient

ORIGINAL = b"From: a@example.org\r\nSubject: original\r\n\r\nthe body\r\n"


def entry(**kw: object) -> QueuedMessage:
    return QueuedMessage("Q1", "a@example.org",
                         [QueuedRecipient("b@remote.example", orcpt="rfc822;list@example.org")],
                         created=1_800_000_000.0, next_attempt=0.0, **kw)  # type: ignore[arg-type]


def report(e: QueuedMessage) -> bytes:
    r = e.recipients[0]
    r.reply, r.remote = "550 5.1.1 gone", "mx.remote.example [192.0.2.1]"
    return make_dsn(hostname="mx.example.org", entry=e,
                    notices=[Notice(r, FAILED, "5.1.1", r.reply)], original=ORIGINAL,
                    now=1_800_000_100.0, message_id="N1", boundary="BOUNDARY")


def test_report_structure() -> None:
    """A bounce is multipart/report with the text, the status fields and the whole original."""
    raw = report(entry(envid="ENV-1"))
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert parsed.get_params()[1:] == [("report-type", "delivery-status"),
                                       ("boundary", "BOUNDARY")]
    assert b"\r\nTo: <a@example.org>\r\n" in raw
    assert parsed["Auto-Submitted"] == "auto-replied"
    text, status, original = parsed.iter_parts()
    assert text.get_content_type() == "text/plain"
    assert status.get_content_type() == "message/delivery-status"
    assert original.get_content_type() == "message/rfc822"
    assert raw.endswith(ORIGINAL + b"\r\n--BOUNDARY--\r\n")
    block = raw.split(b"Content-Type: message/delivery-status\r\n\r\n")[1].split(b"--BOUNDARY")[0]
    assert block.decode() == (
        "Reporting-MTA: dns; mx.example.org\r\n"
        "Original-Envelope-Id: ENV-1\r\n"
        "Arrival-Date: Fri, 15 Jan 2027 08:00:00 +0000\r\n\r\n"
        "Final-Recipient: rfc822; b@remote.example\r\n"
        "Original-Recipient: rfc822; list@example.org\r\n"
        "Action: failed\r\n"
        "Status: 5.1.1\r\n"
        "Remote-MTA: dns; mx.remote.example\r\n"
        "Diagnostic-Code: smtp; 550 5.1.1 gone\r\n"
        "Last-Attempt-Date: Fri, 15 Jan 2027 08:01:40 +0000\r\n\r\n"
    )


def test_ret_hdrs_and_smtputf8() -> None:
    """RET=HDRS returns the header section only; SMTPUTF8 messages use the RFC 6533 types."""
    raw = report(entry(ret="HDRS"))
    assert b"Content-Type: text/rfc822-headers\r\n\r\nFrom: a@example.org\r\nSubject: original" \
        b"\r\n\r\n--BOUNDARY--" in raw
    assert b"the body" not in raw
    utf8 = report(entry(smtputf8=True))
    assert b"Content-Type: message/global-delivery-status" in utf8
    assert b"Final-Recipient: utf-8; b@remote.example" in utf8
    assert b"Content-Type: message/global\r\n" in utf8


def test_notify_rules() -> None:
    """No NOTIFY: failures and delays; NEVER: nothing; a list: only what it names."""
    default, never = QueuedRecipient("x@y"), QueuedRecipient("x@y", notify=("NEVER",))
    success = QueuedRecipient("x@y", notify=("SUCCESS",))
    assert [wants_notice(default, a) for a in (FAILED, DELAYED, DELIVERED)] == [True, True, False]
    assert [wants_notice(never, a) for a in (FAILED, DELAYED, DELIVERED)] == [False] * 3
    assert [wants_notice(success, a) for a in (FAILED, DELAYED, DELIVERED)] == [
        False, False, True]


def test_status_of() -> None:
    """The status comes from the enhanced code, else the reply class."""
    assert status_of("550 5.7.1 no", "5.0.0") == "5.7.1"
    assert status_of("451 try later", "4.0.0") == "4.0.0"
    assert status_of("gave up", "5.0.0") == "5.0.0"
