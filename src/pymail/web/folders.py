"""
Folder management on the web: create, rename and delete the account's own
folders.  Names go through the storage's own check
(:func:`~pymail.storage.base.check_mailbox_name`) and then the store, so the
web accepts exactly the names IMAP does; INBOX and the special-use folders
(Sent, Trash, Drafts... RFC 6154) cannot be renamed or deleted here, since
the web and desktop clients file mail into them by role.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.logger import Logger

from pymail.errors import BadMailboxName, MailboxExists, NoSuchMailbox
from pymail.interfaces import IMailStore
from pymail.storage.base import check_mailbox_name
from pymail.web.http import Context, HTTPError, Response
from pymail.web.messages import FolderEntry, folder_list, special_use_roles
from pymail.web.views import attr, csrf_field, esc, folder_url, notice

if TYPE_CHECKING:
    from pymail.web.app import WebApp

log = Logger()

#: Fixed notices after a change (the URL names one; no text is reflected).
FOLDER_NOTICES = {"created": "Folder created.", "renamed": "Folder renamed.",
                  "deleted": "Folder deleted with its messages."}


class FolderRefused(ValueError):
    """The change cannot be made; the text says why, for the user."""


def protected(store: IMailStore, name: str) -> str | None:
    """Why ``name`` may not be renamed or deleted, or ``None`` when it may."""
    return _refusal(name, special_use_roles(store).get(name))


def _refusal(name: str, role: str | None) -> str | None:
    """:func:`protected` for a folder whose special-use ``role`` is known."""
    if name.upper() == "INBOX":
        return "INBOX cannot be renamed or deleted."
    if role is not None:
        return f"{name} is the {role.lstrip(chr(92))} folder; it cannot be renamed or deleted."
    return None


def checked_name(name: str) -> str:
    """
    A new folder name, as the storage would accept it.

    :raises FolderRefused: saying why not.
    """
    name = name.strip()
    try:
        check_mailbox_name(name)
    except BadMailboxName as e:
        raise FolderRefused(f"{name!r} cannot be a folder name: {e}.") from None
    if name.upper() == "INBOX":
        raise FolderRefused("There is an INBOX already.")
    return name


async def change_folder(store: IMailStore, action: str, name: str, new: str = "") -> str:
    """
    Create, rename or delete a folder of ``store``; the notice key of what was done.

    :raises FolderRefused: a bad or taken name, a missing or protected folder.
    """
    try:
        if action == "create":
            await store.create_mailbox(checked_name(name))
            return "created"
        if name not in store.list_mailboxes():
            raise FolderRefused(f"There is no folder {name!r}.")
        why = protected(store, name)
        if why is not None:
            raise FolderRefused(why)
        if action == "rename":
            await store.rename_mailbox(name, checked_name(new))
            return "renamed"
        if action == "delete":
            await store.delete_mailbox(name)
            return "deleted"
    except MailboxExists:
        raise FolderRefused(f"There is a folder {new or name!r} already.") from None
    except NoSuchMailbox:
        raise FolderRefused(f"There is no folder {name!r}.") from None
    except BadMailboxName as e:
        raise FolderRefused(f"The storage refused the name: {e}.") from None
    raise HTTPError(400, "Unknown action.")


def folders_body(folders: list[FolderEntry], csrf: str,
                 error: str | None, done: str | None) -> str:
    rows = []
    for f in folders:
        # The rows carry their roles: no roles file read per row.
        why = _refusal(f.name, f.role)
        if why is not None:
            tools = f'<span class="meta">{esc("INBOX" if f.role is None else f.role)}</span>'
        else:
            tools = (
                f'<form method="post" action="/folders" class="inline">{csrf_field(csrf)}'
                f'<input type="hidden" name="name" value="{attr(f.name)}">'
                f'<input name="new" value="{attr(f.name)}" aria-label="New name" required>'
                '<button name="action" value="rename">Rename</button>'
                '<button name="action" value="delete" class="link danger" '
                'data-confirm="Delete this folder and every message in it?">Delete</button>'
                '</form>')
        rows.append(f'<tr data-folder="{attr(f.name)}"><td><a href="{attr(folder_url(f.name))}">'
                    f'{esc(f.name)}</a></td><td>{f.total}</td><td>{f.unseen}</td>'
                    f'<td>{tools}</td></tr>')
    return (
        '<h1>Folders</h1>' + notice(error, "error") + notice(done)
        + '<table class="admin folders-table"><thead><tr><th>Folder</th><th>Messages</th>'
        f'<th>Unread</th><th></th></tr></thead><tbody>{"".join(rows)}</tbody></table>'
        f'<h2>New folder</h2><form method="post" action="/folders" class="inline">'
        f'{csrf_field(csrf)}<input name="name" placeholder="Projects.2026" '
        'aria-label="Folder name" required><button name="action" value="create" '
        'class="primary">Create folder</button></form>'
        '<p class="meta">A dot makes a sub-folder (<code>Projects.2026</code>). INBOX and the '
        'special folders (Sent, Drafts, Trash...) stay as they are.</p>'
    )


def add_routes(app: WebApp) -> None:
    async def page(ctx: Context, error: str | None = None, done: str | None = None,
                   status: int = 200) -> Response:
        session = ctx.require_session()
        store = session.account.store
        folders = await folder_list(store, app.counts)
        return await app.page(ctx, "Folders", folders_body(folders, session.csrf,
                                                           error, done), status=status,
                              folders=folders)

    async def show(ctx: Context) -> Response:
        return await page(ctx, done=FOLDER_NOTICES.get(ctx.query.get("done")))

    async def change(ctx: Context) -> Response:
        session = ctx.require_session()
        action = ctx.form.get("action")
        name = ctx.form.get("name")
        try:
            done = await change_folder(session.account.store, action, name, ctx.form.get("new"))
        except FolderRefused as e:
            return await page(ctx, error=str(e), status=400)
        log.info("web: {account} {done} folder {name!r}", account=session.address, done=done,
                 name=name)
        return Response.redirect(f"/folders?done={done}")

    app.router.add("GET", "/folders", show)
    app.router.add("POST", "/folders", change)


__all__ = ["FOLDER_NOTICES", "FolderRefused", "add_routes", "change_folder", "checked_name",
           "protected"]
