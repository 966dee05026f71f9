"""
Delivery status notifications (RFC 3464 ``multipart/report`` messages,
RFC 3461 semantics): bounces for failed recipients, delay warnings and,
when asked with ``NOTIFY=SUCCESS``, success reports.

Rules kept here in one place:

- never a notification to the null reverse-path (RFC 5321 section 6.1:
  no bounce of a bounce);
- a recipient with ``NOTIFY=NEVER`` is never reported; with a NOTIFY list,
  only the listed outcomes are; without NOTIFY, failures and delays are;
- ``RET=HDRS`` returns only the header section, otherwise the whole
  message is attached (``message/rfc822``);
- ``ENVID`` and each ``ORCPT`` are echoed (``Original-Envelope-Id``,
  ``Original-Recipient``);
- for a message that needed SMTPUTF8, the report uses RFC 6533's
  ``message/global-delivery-status`` (addresses typed ``utf-8``) and
  returns the message as ``message/global`` (``message/global-headers``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import UTC, datetime
from email.utils import format_datetime

import attrs

from pymail.relay.queue import QueuedMessage, QueuedRecipient

FAILED = "failed"
DELAYED = "delayed"
DELIVERED = "delivered"
RELAYED = "relayed"

_NOTIFY_KEYWORD = {FAILED: "FAILURE", DELAYED: "DELAY", DELIVERED: "SUCCESS", RELAYED: "SUCCESS"}

_SUBJECTS = {
    FAILED: "Undelivered Mail Returned to Sender",
    DELAYED: "Delayed Mail (still being retried)",
    DELIVERED: "Successful Mail Delivery Report",
    RELAYED: "Successful Mail Delivery Report",
}

_INTROS = {
    FAILED: "Your message could not be delivered to one or more recipients.\n"
            "This is permanent; it will not be retried.",
    DELAYED: "Your message has not been delivered yet to one or more recipients.\n"
             "It is still being retried; you do not need to send it again.",
    DELIVERED: "Your message was delivered to the recipients below.",
    RELAYED: "Your message was handed to a server that does not send delivery reports;\n"
             "no further notification will come for the recipients below.",
}


def wants_notice(recipient: QueuedRecipient, action: str) -> bool:
    """Whether the recipient's NOTIFY asks for a notice of ``action``."""
    if recipient.notify is None:
        return action in (FAILED, DELAYED)
    return _NOTIFY_KEYWORD[action] in recipient.notify


def status_of(reply_text: str, default: str) -> str:
    """The RFC 3463 status in a reply text such as ``550 5.1.1 No such user``."""
    parts = reply_text.split()
    if len(parts) > 1 and parts[1].count(".") == 2 and parts[1][0] in "245":
        return parts[1]
    if parts and parts[0][:1] in ("2", "4", "5") and parts[0].isdigit():
        return f"{parts[0][0]}.0.0"
    return default


@attrs.frozen
class Notice:
    """One recipient's line in a notification."""

    recipient: QueuedRecipient
    action: str
    status: str
    diagnostic: str


def _header_section(message: bytes) -> bytes:
    end = message.find(b"\r\n\r\n")
    return message if end < 0 else message[: end + 2]


def make_dsn(
    *,
    hostname: str,
    entry: QueuedMessage,
    notices: Sequence[Notice],
    original: bytes,
    now: float,
    message_id: str,
    retry_until: float | None = None,
    boundary: str | None = None,
) -> bytes:
    """
    The notification message, wire form, for the notices (all of the same
    kind: failed, delayed or delivered).

    :param original: the queued message, wire form (attached per RET).
    :param message_id: a unique id for the new message's Message-ID.
    """
    assert entry.sender, "never notify the null sender"
    action = notices[0].action
    when = format_datetime(datetime.fromtimestamp(now, UTC))
    boundary = boundary or f"{message_id}/{os.urandom(6).hex()}"
    human = [_INTROS[action], ""]
    for n in notices:
        human.append(f"<{n.recipient.address}>: {n.diagnostic}")
    human.append("")
    human.append(f"Reporting server: {hostname}; queue id {entry.queue_id}.")
    status = [f"Reporting-MTA: dns; {hostname}"]
    if entry.envid:
        status.append(f"Original-Envelope-Id: {entry.envid}")
    status.append(f"Arrival-Date: {format_datetime(datetime.fromtimestamp(entry.created, UTC))}")
    for n in notices:
        status.append("")
        address_type = "utf-8" if entry.smtputf8 else "rfc822"
        status.append(f"Final-Recipient: {address_type}; {n.recipient.address}")
        if n.recipient.orcpt:
            addr_type, _, value = n.recipient.orcpt.partition(";")
            status.append(f"Original-Recipient: {addr_type}; {value}")
        status.append(f"Action: {n.action}")
        status.append(f"Status: {n.status}")
        if n.recipient.remote:
            status.append(f"Remote-MTA: dns; {n.recipient.remote.split(' ')[0]}")
        if n.diagnostic[:3].isdigit():
            status.append(f"Diagnostic-Code: smtp; {n.diagnostic}")
        else:
            status.append(f"Diagnostic-Code: X-pymail; {n.diagnostic}")
        status.append(f"Last-Attempt-Date: {when}")
        if action == DELAYED and retry_until is not None:
            until = format_datetime(datetime.fromtimestamp(retry_until, UTC))
            status.append(f"Will-Retry-Until: {until}")
    if entry.ret == "HDRS":
        attached_type = "message/global-headers" if entry.smtputf8 else "text/rfc822-headers"
        attached = _header_section(original)
    else:
        attached_type = "message/global" if entry.smtputf8 else "message/rfc822"
        attached = original
    status_type = ("message/global-delivery-status" if entry.smtputf8
                   else "message/delivery-status")
    if not attached.endswith(b"\r\n"):
        attached += b"\r\n"
    headers = [
        f"From: Mail Delivery System <MAILER-DAEMON@{hostname}>",
        f"To: <{entry.sender}>",
        f"Subject: {_SUBJECTS[action]}",
        f"Date: {when}",
        f"Message-ID: <{message_id}@{hostname}>",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary="{boundary}"',
    ]
    crlf = "\r\n"
    text = (
        crlf.join(headers) + crlf + crlf
        + "This is a MIME-encapsulated message." + crlf + crlf
        + f"--{boundary}{crlf}"
        + "Content-Type: text/plain; charset=utf-8" + crlf
        + "Content-Transfer-Encoding: 8bit" + crlf + crlf
        + crlf.join(human) + crlf + crlf
        + f"--{boundary}{crlf}"
        + f"Content-Type: {status_type}" + crlf + crlf
        + crlf.join(status) + crlf + crlf
        + f"--{boundary}{crlf}"
        + f"Content-Type: {attached_type}" + crlf + crlf
    )
    return text.encode("utf-8") + attached + f"{crlf}--{boundary}--{crlf}".encode()
