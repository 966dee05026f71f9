"""
Drafts: a compose form saved as a message in the ``\\Drafts`` folder (with
the ``\\Draft`` and ``\\Seen`` flags, as IMAP clients store theirs, RFC
3501 and 6154), opened again in the compose form, saved over (the old copy
is removed once the new one is stored) and sent (the draft is removed once
the message is delivered).

A draft keeps what the form holds: To, Cc, Bcc (kept in the draft's header,
never in the sent message's), Subject, the text and the attachments.  Which
message it replies to or forwards is kept in :data:`REPLY_HEADER`, so that
sending a resumed reply still sets ``\\Answered`` and ``In-Reply-To``, and a
resumed forward attaches the original when sent (not in the draft).
"""

from __future__ import annotations

from datetime import datetime
from email.message import EmailMessage

import attrs

from pymail.interfaces import IMailbox, IMailStore
from pymail.web.compose import Draft, Upload, build_message, check_header_value
from pymail.web.messages import (
    Attachment,
    attachment_contents,
    header_addresses,
    header_text,
    role_folder,
    take_apart,
)

#: The header of a draft that says what it answers: ``MODE FOLDER/UID``
#: (mode ``reply``, ``all`` or ``forward``; the folder URL-quoted).
REPLY_HEADER = "X-Pymail-Reply"

#: Flags of a saved draft.
DRAFT_FLAGS = ("\\Draft", "\\Seen")

#: The reply modes the compose form knows.
REPLY_MODES = ("reply", "all", "forward")


async def drafts_folder(store: IMailStore) -> IMailbox:
    """The folder with the ``\\Drafts`` role, or ``Drafts`` (created if missing)."""
    return await role_folder(store, "\\Drafts", "Drafts")


def draft_message(draft: Draft, sender: str, hostname: str, when: datetime,
                  reply: str = "", mode: str = "") -> bytes:
    """A draft in wire form: the message as it would be sent, plus Bcc and the reply link."""
    headers: list[tuple[str, str]] = []
    if draft.bcc:
        headers.append(("Bcc", ", ".join(draft.bcc)))
    if reply and mode in REPLY_MODES:
        headers.append((REPLY_HEADER, f"{mode} {check_header_value('reply', reply)}"))
    return build_message(draft, sender, hostname, when, extra_headers=tuple(headers))


@attrs.frozen
class ResumedDraft:
    """A saved draft taken apart for the compose form."""

    to: str
    cc: str
    bcc: str
    subject: str
    body: str
    reply: str
    mode: str
    attachments: tuple[Attachment, ...]


def _addresses(message: EmailMessage, name: str) -> str:
    return ", ".join(header_addresses(message, name))


def resume(data: bytes) -> ResumedDraft:
    """
    The compose form's fields from a saved draft.  Its header may have been
    written by any IMAP client, so every field is read to one line (an
    encoded CR or LF becomes a space) and the reply link is only a claim:
    the caller checks it names a message of the account.
    """
    parsed = take_apart(data, text_limit=None)  # the whole text goes back into the form
    message = parsed.message
    mode, _, reply = header_text(message, REPLY_HEADER).partition(" ")
    if mode not in REPLY_MODES or not reply:
        mode, reply = "", ""
    body = (parsed.text or "").replace("\r\n", "\n")
    if body.endswith("\n"):
        body = body[:-1]  # set_content ends the text with a line break of its own
    return ResumedDraft(
        to=_addresses(message, "To"), cc=_addresses(message, "Cc"),
        bcc=_addresses(message, "Bcc"),
        subject=header_text(message, "Subject"),
        body=body, reply=reply, mode=mode, attachments=tuple(parsed.attachments))


def kept_attachments(data: bytes, keep: list[str]) -> tuple[Upload, ...]:
    """The draft's attachments whose part indexes are in ``keep`` (the form's checkboxes)."""
    wanted = {int(k) for k in keep if k.isascii() and k.isdigit()}  # not "²"
    return tuple(Upload(found.filename, found.content_type, content)
                 for found, content in attachment_contents(take_apart(data), wanted))


__all__ = ["DRAFT_FLAGS", "REPLY_HEADER", "REPLY_MODES", "ResumedDraft", "draft_message",
           "drafts_folder", "kept_attachments", "resume"]
