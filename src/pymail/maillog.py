"""
The mail log: one function per thing that happens to a message, so an
operator can follow any message by its queue id with ``grep``.

Every event is logged through :mod:`twisted.logger` in the namespace
``pymail.maillog``, with the values as event fields (for JSON observers)
and a one-line text of the form::

    mail.accepted id=0J3K8M2N4P6Q8R0S client=192.0.2.1 from=<a@example.org> \
to=<b@example.com>,<c@example.com> size=1234 reply="250 2.0.0 Ok: queued as ..."

Keys come in a fixed order and never change meaning; values that may hold
spaces (the reply, a reason) are double-quoted.  AUTH payloads and
passwords are never passed here, so they cannot reach the log.
"""

from __future__ import annotations

from collections.abc import Iterable

from twisted.logger import Logger

from pymail.address import Address
from pymail.smtp.replies import Reply

_log = Logger(namespace="pymail.maillog")


def _path(address: Address | str) -> str:
    return address.path if isinstance(address, Address) else f"<{address}>"


def _paths(addresses: Iterable[Address | str]) -> str:
    return ",".join(_path(a) for a in addresses) or "-"


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


_ACCEPTED = (
    "mail.accepted id={queue_id} client={client} from={sender} to={recipients} "
    "size={size} reply={reply}"
)
_ACCEPTED_STORED = _ACCEPTED + " stored={stored}"


def accepted(
    queue_id: str,
    client: str,
    sender: Address,
    recipients: Iterable[Address],
    size: int,
    reply: Reply,
    *,
    stored: Iterable[tuple[str, str]] = (),
    log: Logger = _log,
) -> None:
    """
    A message was received, stored and acknowledged with ``reply``.

    :param stored: the local copies as ``(account, folder)`` pairs, logged
        in the same line as ``stored="account/folder,..."`` (one log event
        per message is much cheaper than one per copy).
    """
    copies = ",".join(f"{account}/{folder}" for account, folder in stored)
    log.info(
        _ACCEPTED_STORED if copies else _ACCEPTED,
        mail_event="accepted",
        queue_id=queue_id,
        client=client,
        sender=_path(sender),
        recipients=_paths(recipients),
        size=size,
        reply=_quote(str(reply)),
        stored=_quote(copies),
    )


def delivered(
    queue_id: str,
    sender: Address,
    accounts: Iterable[str],
    folder: str,
    size: int,
    *,
    log: Logger = _log,
) -> None:
    """A message was stored durably in ``folder`` of each of ``accounts``."""
    log.info(
        "mail.delivered id={queue_id} from={sender} to={recipients} folder={folder} size={size}",
        mail_event="delivered",
        queue_id=queue_id,
        sender=_path(sender),
        recipients=_paths(accounts),
        folder=_quote(folder),
        size=size,
    )


def rejected(
    client: str,
    sender: Address | None,
    recipients: Iterable[Address],
    reply: Reply,
    *,
    queue_id: str = "-",
    stage: str,
    log: Logger = _log,
) -> None:
    """
    Something was refused for good (a 5xx reply) or for now (a 4xx reply).

    :param stage: the SMTP command the reply answered (``"RCPT"``, ``"DATA"``...).
    """
    log.info(
        "mail.rejected id={queue_id} client={client} stage={stage} from={sender} "
        "to={recipients} reply={reply}",
        mail_event="rejected",
        queue_id=queue_id,
        client=client,
        stage=stage,
        sender=_path(sender) if sender is not None else "-",
        recipients=_paths(recipients),
        reply=_quote(str(reply)),
    )


def deferred(
    queue_id: str,
    client: str,
    sender: Address,
    recipients: Iterable[Address],
    size: int,
    reply: Reply,
    reason: str,
    *,
    log: Logger = _log,
) -> None:
    """
    A message could not be accepted now (a storage failure...); the client
    was told to try again with ``reply``.
    """
    log.warn(
        "mail.deferred id={queue_id} client={client} from={sender} to={recipients} "
        "size={size} reply={reply} reason={reason}",
        mail_event="deferred",
        queue_id=queue_id,
        client=client,
        sender=_path(sender),
        recipients=_paths(recipients),
        size=size,
        reply=_quote(str(reply)),
        reason=_quote(reason),
    )


def auth_succeeded(client: str, mechanism: str, account: str, *, log: Logger = _log) -> None:
    """A client logged in (the account, never the credentials)."""
    log.info(
        "mail.auth id=- client={client} mechanism={mechanism} account=<{account}> result=ok",
        mail_event="auth",
        client=client,
        mechanism=mechanism,
        account=account,
        result="ok",
    )


def auth_failed(client: str, mechanism: str, *, log: Logger = _log) -> None:
    """
    A login failed.  Only the client and the mechanism are logged: the
    user name travels in the same payload as the password, and a password
    typed into the user name field must not end up in a log.
    """
    log.info(
        "mail.auth id=- client={client} mechanism={mechanism} result=failed",
        mail_event="auth",
        client=client,
        mechanism=mechanism,
        result="failed",
    )


def queued(
    queue_id: str, sender: Address | str, recipients: Iterable[Address | str], size: int,
    *, log: Logger = _log,
) -> None:
    """A message was written to the outbound queue for ``recipients``."""
    log.info(
        "mail.queued id={queue_id} from={sender} to={recipients} size={size}",
        mail_event="queued", queue_id=queue_id, sender=_path(sender),
        recipients=_paths(recipients), size=size,
    )


def sent(
    queue_id: str, recipient: str, remote: str, reply: str, *, log: Logger = _log
) -> None:
    """A remote server accepted the message for ``recipient``."""
    log.info(
        "mail.sent id={queue_id} to={recipient} remote={remote} reply={reply}",
        mail_event="sent", queue_id=queue_id, recipient=_path(recipient),
        remote=_quote(remote), reply=_quote(reply),
    )


def retry(
    queue_id: str, recipient: str, remote: str, reply: str, delay: float,
    *, log: Logger = _log,
) -> None:
    """Delivery to ``recipient`` failed for now; it is tried again after ``delay`` seconds."""
    log.info(
        "mail.retry id={queue_id} to={recipient} remote={remote} reply={reply} delay={delay}",
        mail_event="retry", queue_id=queue_id, recipient=_path(recipient),
        remote=_quote(remote or "-"), reply=_quote(reply), delay=int(delay),
    )


def bounced(
    queue_id: str, recipient: str, remote: str, reply: str, notice: str,
    *, log: Logger = _log,
) -> None:
    """
    Delivery to ``recipient`` failed for good; ``notice`` is the queue id of
    the bounce sent to the sender, or ``-`` when none was sent (null sender,
    NOTIFY=NEVER).
    """
    log.info(
        "mail.bounced id={queue_id} to={recipient} remote={remote} reply={reply} "
        "notice={notice}",
        mail_event="bounced", queue_id=queue_id, recipient=_path(recipient),
        remote=_quote(remote or "-"), reply=_quote(reply), notice=notice,
    )
