"""Tests for pymail.smtp.replies and pymail.maillog."""

from __future__ import annotations

from twisted.logger import Logger, LogEvent, formatEvent

from pymail import maillog
from pymail.address import Address
from pymail.smtp import replies as R


def test_single_line_reply() -> None:
    """A reply is code, enhanced code and text, CRLF-terminated."""
    assert R.QUEUED.format(queue_id="ABC").to_bytes() == b"250 2.0.0 Ok: queued as ABC\r\n"


def test_multi_line_reply() -> None:
    """Newlines in the text make continuation lines with '-'."""
    assert R.HELP.lines()[0].startswith("214-2.0.0 ")
    assert R.HELP.lines()[-1].startswith("214 2.0.0 ")


def test_reply_without_enhanced_code() -> None:
    """The greeting and 354 carry no enhanced code; an empty challenge is "334 " (RFC 4954)."""
    assert R.START_DATA.to_bytes() == b"354 End data with <CR><LF>.<CR><LF>\r\n"
    assert R.AUTH_CHALLENGE.format(challenge="").to_bytes() == b"334 \r\n"


def test_reply_classes() -> None:
    """Replies know whether they are errors, and which kind."""
    assert not R.OK.is_error
    assert R.TOO_MANY_RECIPIENTS.is_error and not R.TOO_MANY_RECIPIENTS.permanent
    assert R.RCPT_UNKNOWN_USER.permanent


def capture() -> tuple[Logger, list[LogEvent]]:
    events: list[LogEvent] = []
    return Logger(namespace="test", observer=events.append), events


def test_maillog_accepted_line() -> None:
    """The accepted event is one greppable line with the fields in order."""
    log, events = capture()
    maillog.accepted(
        "QID1",
        "192.0.2.1",
        Address.parse("<a@b.example>"),
        [Address.parse("<c@example.com>"), Address.parse("<d@example.com>")],
        123,
        R.QUEUED.format(queue_id="QID1"),
        log=log,
    )
    [event] = events
    assert formatEvent(event) == (
        "mail.accepted id=QID1 client=192.0.2.1 from=<a@b.example> "
        'to=<c@example.com>,<d@example.com> size=123 reply="250 2.0.0 Ok: queued as QID1"'
    )
    assert event["mail_event"] == "accepted"
    assert event["queue_id"] == "QID1"


def test_maillog_accepted_names_the_stored_copies() -> None:
    """With local copies, the one accepted line ends with stored="account/folder,..."."""
    log, events = capture()
    maillog.accepted(
        "QID2", "192.0.2.1", Address.parse("<a@b.example>"), [Address.parse("<team@x.example>")],
        9, R.QUEUED.format(queue_id="QID2"),
        stored=[("c@x.example", "INBOX"), ("d@x.example", "INBOX")], log=log,
    )
    [event] = events
    assert formatEvent(event).endswith(
        'reply="250 2.0.0 Ok: queued as QID2" stored="c@x.example/INBOX,d@x.example/INBOX"')


def test_maillog_rejected_with_null_sender_and_quotes() -> None:
    """Rejections show the stage, <> for the null sender and escape quotes in the reply."""
    log, events = capture()
    maillog.rejected(
        "192.0.2.1",
        Address.null(),
        [Address.parse('<"x y"@example.com>')],
        R.RCPT_UNKNOWN_USER.format(address='"x y"@example.com'),
        stage="RCPT",
        log=log,
    )
    assert formatEvent(events[0]) == (
        'mail.rejected id=- client=192.0.2.1 stage=RCPT from=<> to=<"x y"@example.com> '
        'reply="550 5.1.1 No such user here: <\\"x y\\"@example.com>"'
    )


def test_maillog_other_events() -> None:
    """delivered, deferred and auth events format with their fields."""
    log, events = capture()
    sender = Address.parse("<a@b.example>")
    maillog.delivered("Q", sender, ["c@example.com"], "INBOX", 10, log=log)
    maillog.deferred("Q", "ip", sender, [], 10, R.DELIVERY_FAILED, "disk full", log=log)
    maillog.auth_succeeded("ip", "PLAIN", "c@example.com", log=log)
    maillog.auth_failed("ip", "LOGIN", log=log)
    assert [formatEvent(e) for e in events] == [
        'mail.delivered id=Q from=<a@b.example> to=<c@example.com> folder="INBOX" size=10',
        "mail.deferred id=Q client=ip from=<a@b.example> to=- size=10 "
        'reply="451 4.3.0 Could not store the message, try again later" reason="disk full"',
        "mail.auth id=- client=ip mechanism=PLAIN account=<c@example.com> result=ok",
        "mail.auth id=- client=ip mechanism=LOGIN result=failed",
    ]
