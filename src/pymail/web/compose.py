"""
Writing mail from the web: the compose form is checked (no CR or LF in any
header field: header injection), turned into a MIME message, and handed to
:class:`Submitter`, the one place the web sends mail.

:class:`Submitter` uses the SMTP submission policy
(:class:`~pymail.smtp.delivery.LocalDelivery` or any
:class:`~pymail.smtp.delivery.IDeliveryPolicy`): the same sender check, the
same recipient checks and the same durable delivery as a desktop client's
message on port 587.  When the relay queue lands, the policy accepts remote
recipients and queues them; nothing here changes.  The sent copy goes to
the account's ``\\Sent`` folder through its :class:`IMailStore`.
"""

from __future__ import annotations

import email.policy
import mimetypes
import secrets
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, getaddresses, make_msgid

import attrs
from twisted.logger import Logger

from pymail import maillog
from pymail.address import Address, AddressError, Envelope, EnvelopeRecipient
from pymail.interfaces import IAccount
from pymail.smtp import replies
from pymail.smtp.delivery import IDeliveryPolicy, QueuedCopy, StoredCopy
from pymail.smtp.replies import ReplyError
from pymail.web.messages import role_folder

log = Logger()

#: Most recipients (To, Cc and Bcc together), as SMTP's default limit.
MAX_RECIPIENTS = 100

#: Longest subject accepted, in characters.
MAX_SUBJECT = 998


class ComposeError(ValueError):
    """The form cannot be sent as it is; the text says why, for the user."""


@attrs.frozen
class Upload:
    """A file attached in the compose form."""

    filename: str
    content_type: str
    data: bytes = attrs.field(repr=False)


@attrs.frozen
class Draft:
    """A checked compose form."""

    to: tuple[str, ...]
    cc: tuple[str, ...]
    bcc: tuple[str, ...]
    subject: str
    body: str
    attachments: tuple[Upload, ...] = ()
    in_reply_to: str | None = None
    references: str | None = None
    forwarded: bytes | None = attrs.field(default=None, repr=False)

    @property
    def recipients(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.to + self.cc + self.bcc))


def check_header_value(name: str, value: str) -> str:
    """
    A single-line header value, or refuse it.

    :raises ComposeError: the value holds CR, LF or NUL (header injection).
    """
    if any(c in value for c in "\r\n\0"):
        raise ComposeError(f"{name} must be a single line (it contains a line break)")
    return value.strip()


def parse_recipients(name: str, value: str) -> tuple[str, ...]:
    """
    The addresses in a To/Cc/Bcc field (commas between them).

    :raises ComposeError: a line break, or an address that is not valid.
    """
    value = check_header_value(name, value)
    if not value:
        return ()
    found = []
    for _display, spec in getaddresses([value]):
        if not spec:
            raise ComposeError(f"{name}: {value!r} holds an empty or malformed address")
        try:
            address = Address.parse(spec)
        except AddressError as e:
            raise ComposeError(f"{name}: {spec!r} is not a valid address ({e})") from None
        found.append(str(address))
    return tuple(found)


def check_form(to: str, cc: str, bcc: str, subject: str, body: str,
               attachments: tuple[Upload, ...] = (), *, need_recipients: bool = True) -> Draft:
    """
    Check a compose form (a draft being saved need not have recipients yet).

    :raises ComposeError: saying which field is wrong and why.
    """
    draft = Draft(
        to=parse_recipients("To", to),
        cc=parse_recipients("Cc", cc),
        bcc=parse_recipients("Bcc", bcc),
        subject=check_header_value("Subject", subject),
        body=body.replace("\r\n", "\n").replace("\r", "\n"),
        attachments=attachments,
    )
    if need_recipients and not draft.recipients:
        raise ComposeError("Add at least one recipient (To, Cc or Bcc)")
    if len(draft.recipients) > MAX_RECIPIENTS:
        raise ComposeError(f"Too many recipients (at most {MAX_RECIPIENTS})")
    if len(draft.subject) > MAX_SUBJECT:
        raise ComposeError(f"The subject is too long (at most {MAX_SUBJECT} characters)")
    for upload in attachments:
        check_header_value("attachment name", upload.filename)
    return draft


def build_message(draft: Draft, sender: str, hostname: str, when: datetime,
                  extra_headers: tuple[tuple[str, str], ...] = ()) -> bytes:
    """
    The message in wire form (CRLF), Bcc left out of the header.

    :param extra_headers: more fields, already checked (a draft's Bcc).
    """
    message = EmailMessage(policy=email.policy.SMTP)
    message["From"] = sender
    if draft.to:
        message["To"] = ", ".join(draft.to)
    if draft.cc:
        message["Cc"] = ", ".join(draft.cc)
    message["Subject"] = draft.subject
    message["Date"] = format_datetime(when)
    message["Message-ID"] = make_msgid(domain=hostname)
    if draft.in_reply_to:
        message["In-Reply-To"] = draft.in_reply_to
        message["References"] = draft.references or draft.in_reply_to
    message["User-Agent"] = "pymail webmail"
    for name, value in extra_headers:
        message[name] = value
    message.set_content(draft.body, cte="quoted-printable")
    for upload in draft.attachments:
        maintype, _, subtype = upload.content_type.partition("/")
        message.add_attachment(upload.data, maintype=maintype, subtype=subtype or "octet-stream",
                               filename=upload.filename)
    if draft.forwarded is not None:
        forwarded = email.message_from_bytes(draft.forwarded, policy=email.policy.SMTP)
        message.add_attachment(forwarded, filename="forwarded.eml")
    return message.as_bytes(policy=email.policy.SMTP)


def guess_type(filename: str, given: str) -> str:
    """A content type for an upload: the browser's if sensible, else from the name."""
    if given and "/" in given and given != "application/octet-stream" and not any(
            c in given for c in "\r\n;"):
        return given.lower()
    guessed, _ = mimetypes.guess_type(filename)
    return guessed or "application/octet-stream"


@attrs.frozen
class Sent:
    """What happened to a submitted message."""

    queue_id: str
    delivered_to: tuple[str, ...]
    queued_for: tuple[str, ...]
    sent_uid: int | None


@attrs.define
class Submitter:
    """
    Sends a message for a signed-in account through the submission policy
    (local recipients delivered durably, remote ones queued for the relay,
    each with Return-Path and Received trace headers as the submission port
    adds them) and files the message as composed in its Sent folder.

    :ivar policy: the same policy the submission port uses.
    """

    _policy: IDeliveryPolicy
    hostname: str

    async def submit(self, account: IAccount, client: str, draft: Draft,
                     message: bytes) -> Sent:
        """
        Check the sender and every recipient, deliver durably, then copy to Sent.

        :raises ReplyError: the policy refused the sender or a recipient
            (its reply says which and why); nothing was sent.
        """
        own = str(account.address)
        sender = Address.parse(own)
        self._policy.check_sender(sender, authenticated_as=own)
        recipients = []
        for recipient in draft.recipients:
            found = await _maybe_deferred(
                self._policy.check_recipient(recipient, authenticated_as=own))
            recipients.append(EnvelopeRecipient(Address.parse(recipient), tuple(found)))
        queue_id = secrets.token_hex(6).upper()
        envelope = Envelope(queue_id=queue_id, sender=sender, recipients=tuple(recipients),
                            client=client)
        targets = [t for r in recipients for t in r.targets]
        now = datetime.now(UTC)
        trace = (f"Return-Path: {sender.path}\r\n"
                 f"Received: from webmail ([{client}])\r\n\tby {self.hostname} (pymail) "
                 f"with HTTP id {queue_id}; {format_datetime(now)}\r\n").encode()
        copies = await self._policy.deliver(targets, trace + message, internaldate=now,
                                            envelope=envelope)
        stored = [c for c in copies if isinstance(c, StoredCopy)]
        queued = [r for c in copies if isinstance(c, QueuedCopy) for r in c.recipients]
        for copy in stored:
            maillog.delivered(queue_id, sender, [copy.account], copy.folder, len(message))
        maillog.accepted(queue_id, f"web:{client}", sender,
                         [r.address for r in recipients], len(message),
                         replies.QUEUED.format(queue_id=queue_id))
        sent_uid: int | None = None
        try:
            sent = await role_folder(account.store, "\\Sent", "Sent")
            sent_uid = await sent.append(message, ("\\Seen",))
        except Exception:
            # The message is delivered; a missing Sent copy must not make the
            # user send it again.
            log.failure("could not file the Sent copy of {queue_id} for {account}",
                        queue_id=queue_id, account=own)
        return Sent(queue_id, tuple(c.account for c in stored), tuple(queued), sent_uid)


async def _maybe_deferred(value: object) -> list[str]:
    from twisted.internet.defer import Deferred

    if isinstance(value, Deferred):
        value = await value
    assert isinstance(value, list)
    return value


__all__ = ["ComposeError", "Draft", "ReplyError", "Sent", "Submitter", "Upload", "build_message",
           "check_form", "check_header_value", "guess_type", "parse_recipients"]
