"""
The HTML of every page, built from escaped pieces.

Every value that came from a message, a user or a URL goes through
:func:`esc` (or :func:`attr`) before it reaches the page; the pages carry
no inline script or style (the Content-Security-Policy forbids both), so
``static/app.js`` and ``static/style.css`` do all of that.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from html import escape
from urllib.parse import quote

import attrs

from pymail.web.messages import (
    PAGE_SIZE,
    SEARCH_FIELDS,
    Attachment,
    FolderEntry,
    FoundRow,
    Page,
    ParsedMessage,
    Row,
    display_date,
)


def esc(value: object) -> str:
    """Text for an HTML text node or a quoted attribute value."""
    return escape(str(value), quote=True)


attr = esc


def folder_url(name: str, page: int = 0) -> str:
    url = "/mail/" + quote(name, safe="")
    return url + (f"?page={page}" if page else "")


def message_url(folder: str, uid: int, suffix: str = "") -> str:
    return f"/mail/{quote(folder, safe='')}/{uid}{suffix}"


@attrs.frozen
class SearchState:
    """What the search box holds: the field, the words, and whether every folder."""

    field: str = SEARCH_FIELDS[0]
    query: str = ""
    everywhere: bool = False


def csrf_field(token: str) -> str:
    return f'<input type="hidden" name="csrf" value="{attr(token)}">'


def layout(title: str, body: str, *, address: str | None = None, csrf: str = "",
           folders: Sequence[FolderEntry] = (), current: str | None = None,
           is_admin: bool = False, body_data: dict[str, str] | None = None,
           search: SearchState | None = None) -> str:
    """
    The page around ``body`` (already HTML): top bar and folder list when
    signed in; ``search`` fills the search box as it was sent.
    """
    search = search or SearchState()
    data = "".join(f' data-{k}="{attr(v)}"' for k, v in (body_data or {}).items())
    top = ""
    side = ""
    if address is not None:
        admin = '<a href="/admin">Admin</a>' if is_admin else ""
        top = (
            '<header class="top"><a class="brand" href="/">pymail</a>'
            '<form class="search" action="/search" method="get">'
            '<select name="folder" aria-label="Search where">'
            f'<option value="{attr(current or "INBOX")}">{esc(current or "INBOX")}</option>'
            f'<option value=""{" selected" if search.everywhere else ""}>All folders</option>'
            '</select><select name="field" aria-label="Search in">'
            + "".join(f'<option value="{f}"{" selected" if f == search.field else ""}>{f}'
                      '</option>' for f in SEARCH_FIELDS)
            + '</select><input type="search" name="q" placeholder="Search mail" '
            f'aria-label="Search" value="{attr(search.query)}"><button>Search</button></form>'
            '<nav><a class="button primary" href="/compose">Compose</a>'
            '<a href="/folders">Folders</a>'
            f'<a href="/settings">Settings</a><a href="/account">Account</a>{admin}'
            f'<span class="who">{esc(address)}</span>'
            f'<form method="post" action="/signout">{csrf_field(csrf)}'
            '<button class="link">Sign out</button></form></nav></header>'
        )
        items = []
        for f in folders:
            cls = ' class="current"' if f.name == current else ""
            count = f'<span class="count">{f.unseen}</span>' if f.unseen else ""
            items.append(f'<li{cls} data-folder="{attr(f.name)}">'
                         f'<a href="{attr(folder_url(f.name))}">{esc(f.name)}</a>{count}</li>')
        side = f'<aside class="folders"><ul>{"".join(items)}</ul></aside>'
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<title>{esc(title)} - pymail</title>'
        '<link rel="stylesheet" href="/static/style.css">'
        '<script src="/static/app.js" defer></script></head>'
        f'<body{data}>{top}<div class="main">{side}<main>{body}</main></div></body></html>'
    )


def notice(text: str | None, kind: str = "notice") -> str:
    return f'<p class="{kind}" role="status">{esc(text)}</p>' if text else ""


def signin_page(token: str, error: str | None = None, username: str = "") -> str:
    body = (
        '<section class="signin"><h1>Sign in</h1>'
        + notice(error, "error")
        + '<form method="post" action="/signin">'
        f'{csrf_field(token)}'
        '<label>Email address<input name="username" type="email" autocomplete="username" '
        f'required value="{attr(username)}"></label>'
        '<label>Password<input name="password" type="password" '
        'autocomplete="current-password" required></label>'
        '<button class="primary">Sign in</button></form></section>'
    )
    return layout("Sign in", body)


def _flags(row: Row) -> str:
    marks = []
    if "\\Flagged" in row.info.flags:
        marks.append('<span class="flag" title="Flagged">&#9873;</span>')
    if "\\Answered" in row.info.flags:
        marks.append('<span class="answered" title="Answered">&#8617;</span>')
    if row.summary.multipart_mixed:
        marks.append('<span class="clip" title="Attachments">&#128206;</span>')
    return "".join(marks)


def message_rows(folder: str, rows: Iterable[Row], show_folder: bool = False) -> str:
    """
    The rows of a message list; with ``show_folder`` (a search of every
    folder) the first cell names the folder instead of a selection box.
    """
    out = []
    for row in rows:
        unread = "\\Seen" not in row.info.flags
        cls = "unread" if unread else "read"
        url = message_url(folder, row.info.uid)
        date = display_date(row.summary.date, row.info.internaldate)
        subject = row.summary.subject or "(no subject)"
        out.append(
            f'<tr class="{cls}" data-uid="{row.info.uid}">'
            + (f'<td class="folder"><a href="{attr(folder_url(folder))}">{esc(folder)}</a></td>'
               if show_folder else
               f'<td><input type="checkbox" name="uid" value="{row.info.uid}" '
               'aria-label="Select"></td>')
            + f'<td class="marks">{_flags(row)}</td>'
            f'<td class="from"><a href="{attr(url)}">{esc(row.summary.sender or "(unknown)")}</a>'
            f'</td><td class="subject"><a href="{attr(url)}">{esc(subject)}</a></td>'
            f'<td class="date">{esc(date)}</td><td class="size">{_size(row.info.size)}</td></tr>'
        )
    return "".join(out)


def _size(octets: int) -> str:
    if octets < 1024:
        return f"{octets} B"
    if octets < 1024 * 1024:
        return f"{octets // 1024} KB"
    return f"{octets / (1024 * 1024):.1f} MB"


def action_bar(folder: str, folders: Sequence[FolderEntry], csrf: str) -> str:
    options = "".join(f'<option value="{attr(f.name)}">{esc(f.name)}</option>'
                      for f in folders if f.name != folder)
    return (
        f'{csrf_field(csrf)}<div class="actions">'
        '<button name="action" value="read">Mark read</button>'
        '<button name="action" value="unread">Mark unread</button>'
        '<button name="action" value="flag">Flag</button>'
        '<button name="action" value="unflag">Unflag</button>'
        '<button name="action" value="delete">Delete</button>'
        f'<select name="target" aria-label="Move to">{options}</select>'
        '<button name="action" value="move">Move</button></div>'
    )


def message_list(folder: str, page: Page, folders: Sequence[FolderEntry], csrf: str,
                 note: str | None = None) -> str:
    first = page.number * PAGE_SIZE + 1 if page.total else 0
    last = min(page.total, (page.number + 1) * PAGE_SIZE)
    nav = []
    if page.number > 0:
        nav.append(f'<a href="{attr(folder_url(folder, page.number - 1))}">&larr; Newer</a>')
    nav.append(f'<span>{first}&ndash;{last} of {page.total}</span>')
    if page.number + 1 < page.pages:
        nav.append(f'<a href="{attr(folder_url(folder, page.number + 1))}">Older &rarr;</a>')
    action = attr(folder_url(folder) + "/actions")
    return (
        f'<h1>{esc(folder)}</h1>{notice(note)}'
        f'<form method="post" action="{action}" class="list">'
        + action_bar(folder, folders, csrf)
        + f'<nav class="pages">{"".join(nav)}</nav>'
        '<table class="messages"><thead><tr><th></th><th></th><th>From</th><th>Subject</th>'
        f'<th>Date</th><th>Size</th></tr></thead><tbody id="rows">'
        + message_rows(folder, page.rows)
        + '</tbody></table>'
        + ("" if page.total else '<p class="empty">No messages.</p>')
        + '</form>'
    )


def search_results(folder: str | None, field: str, query: str, found: Sequence[FoundRow],
                   folders: Sequence[FolderEntry], csrf: str) -> str:
    """Results of a search of one folder, or of every folder (``folder`` is ``None``)."""
    where = "all folders" if folder is None else folder
    head = (f'<h1>Search {esc(where)}: {esc(field)} contains &ldquo;{esc(query)}&rdquo;</h1>'
            f'<p>{len(found)} found.</p>')
    if folder is None:
        rows = "".join(message_rows(f.folder, [f.row], show_folder=True) for f in found)
        return head + f'<table class="messages search-all"><tbody>{rows}</tbody></table>'
    action = attr(folder_url(folder) + "/actions")
    return (
        head + f'<form method="post" action="{action}" class="list">'
        + action_bar(folder, folders, csrf)
        + '<table class="messages"><tbody>' + message_rows(folder, [f.row for f in found])
        + '</tbody></table></form>'
    )


def _attachment_list(folder: str, uid: int, attachments: Sequence[Attachment]) -> str:
    if not attachments:
        return ""
    items = "".join(
        f'<li><a href="{attr(message_url(folder, uid, f"/part/{a.index}/" + quote(a.filename)))}"'
        f' download>{esc(a.filename)}</a> <span class="meta">{esc(a.content_type)}, '
        f'{_size(a.size)}</span></li>' for a in attachments
    )
    return f'<section class="attachments"><h2>Attachments</h2><ul>{items}</ul></section>'


def message_view(folder: str, uid: int, flags: frozenset[str], parsed: ParsedMessage,
                 csrf: str, *, show_images: bool, blocked_images: int,
                 prefer_text: bool) -> str:
    head = "".join(f'<tr><th>{esc(name)}</th><td>{esc(value)}</td></tr>'
                   for name, value in parsed.headers)
    subject = next((v for n, v in parsed.headers if n == "Subject"), "(no subject)")
    actions_url = attr(folder_url(folder) + "/actions")
    seen = "\\Seen" in flags
    flagged = "\\Flagged" in flags
    toolbar = (
        f'<form method="post" action="{actions_url}" class="toolbar">{csrf_field(csrf)}'
        f'<input type="hidden" name="uid" value="{uid}">'
        f'<input type="hidden" name="back" value="message">'
        + (f'<a class="button primary" href="/compose?draft={attr(quote(folder, safe=""))}'
           f'%2F{uid}">Edit draft</a>' if "\\Draft" in flags else "")
        + f'<a class="button" href="/compose?reply={attr(quote(folder, safe=""))}/{uid}">Reply</a>'
        f'<a class="button" href="/compose?reply={attr(quote(folder, safe=""))}/{uid}&amp;'
        'mode=all">Reply all</a>'
        f'<a class="button" href="/compose?reply={attr(quote(folder, safe=""))}/{uid}&amp;'
        'mode=forward">Forward</a>'
        f'<button name="action" value="{"unread" if seen else "read"}">'
        f'{"Mark unread" if seen else "Mark read"}</button>'
        f'<button name="action" value="{"unflag" if flagged else "flag"}">'
        f'{"Unflag" if flagged else "Flag"}</button>'
        '<button name="action" value="delete">Delete</button>'
        f'<a class="button" href="{attr(message_url(folder, uid, "/raw"))}">Source</a></form>'
    )
    if parsed.html is not None and not (prefer_text and parsed.text is not None):
        query = "?images=1" if show_images else ""
        frame_src = attr(message_url(folder, uid, "/html") + query)
        images = ""
        if blocked_images and not show_images:
            images = (f'<p class="notice">{blocked_images} remote image(s) blocked. '
                      f'<a href="{attr(message_url(folder, uid) + "?images=1")}">Show images</a>'
                      '</p>')
        other = (f' <a href="{attr(message_url(folder, uid) + "?text=1")}">Plain text</a>'
                 if parsed.text is not None else "")
        body = (f'{images}<p class="meta">HTML message{other}</p>'
                f'<iframe class="html-body" sandbox="allow-popups '
                f'allow-popups-to-escape-sandbox" src="{frame_src}" title="Message"></iframe>')
    elif parsed.text is not None:
        other = (f'<p class="meta"><a href="{attr(message_url(folder, uid))}">HTML version</a></p>'
                 if parsed.html is not None else "")
        body = f'{other}<pre class="text-body">{esc(parsed.text)}</pre>'
        if parsed.text_truncated and parsed.text_index is not None:
            whole = attr(message_url(folder, uid, f"/part/{parsed.text_index}"))
            body += (f'<p class="notice">This text is long: it is shortened here. '
                     f'<a href="{whole}">Download the whole text</a></p>')
    else:
        body = '<p class="meta">This message has no text to show.</p>'
    if parsed.html_too_long:
        body = ('<p class="notice">The HTML version of this message is too long to show '
                'here: download it from the attachments.</p>' + body)
    return (
        f'<article class="message"><h1>{esc(subject)}</h1>{toolbar}'
        f'<table class="headers">{head}</table>{body}'
        + _attachment_list(folder, uid, parsed.attachments)
        + '</article>'
    )


def compose_page(csrf: str, *, to: str = "", cc: str = "", bcc: str = "", subject: str = "",
                 body: str = "", reply: str = "", mode: str = "", error: str | None = None,
                 forwarding: str | None = None, draft: str = "",
                 kept: Sequence[Attachment] = (), saved: bool = False,
                 max_bytes: int | None = None, original_folder: str | None = None) -> str:
    """
    The compose form; ``draft`` names the saved draft being edited
    (``folder/uid``) and ``kept`` its attachments, offered to keep.
    ``max_bytes`` (the largest message) lets ``app.js`` stop an upload the
    server would refuse before the browser sends it.
    """
    where = f" (in {esc(original_folder)})" if original_folder else ""
    fwd = (f'<p class="meta">The original message &ldquo;{esc(forwarding)}&rdquo;{where} is '
           'attached.</p>' if forwarding is not None else "")
    keep = "".join(
        f'<li><label class="check"><input type="checkbox" name="keep" value="{a.index}" '
        f'checked> {esc(a.filename)} <span class="meta">{esc(a.content_type)}, '
        f'{_size(a.size)}</span></label></li>' for a in kept)
    if keep:
        keep = ('<fieldset class="kept"><legend>Attached to the draft</legend>'
                f'<ul>{keep}</ul></fieldset>')
    return (
        f'<h1>Compose</h1>{notice(error, "error")}'
        + notice("Draft saved in Drafts." if saved else None)
        + '<form method="post" action="/compose" enctype="multipart/form-data" class="compose"'
        + (f' data-max-bytes="{max_bytes}"' if max_bytes else "") + '>'
        f'{csrf_field(csrf)}<input type="hidden" name="reply" value="{attr(reply)}">'
        f'<input type="hidden" name="mode" value="{attr(mode)}">'
        f'<input type="hidden" name="draft" value="{attr(draft)}">'
        f'<label>To<input name="to" value="{attr(to)}" autocomplete="off"></label>'
        f'<label>Cc<input name="cc" value="{attr(cc)}" autocomplete="off"></label>'
        f'<label>Bcc<input name="bcc" value="{attr(bcc)}" autocomplete="off"></label>'
        f'<label>Subject<input name="subject" value="{attr(subject)}"></label>'
        f'<label>Message<textarea name="body" rows="16">\n{esc(body)}</textarea></label>'
        f'{fwd}{keep}<label>Attachments<input type="file" name="attachment" multiple></label>'
        '<div class="buttons"><button class="primary" name="action" value="send">Send</button>'
        '<button name="action" value="draft" formnovalidate>Save draft</button></div></form>'
    )


def sent_page(queue_id: str, delivered: int, queued: int) -> str:
    remote = f", {queued} remote recipient(s) queued for delivery" if queued else ""
    return (f'<h1>Sent</h1><p class="notice">Your message was sent (queue id {esc(queue_id)}: '
            f'{delivered} local copy(ies) delivered{remote}) and filed in Sent.</p>'
            '<p><a href="/">Back to your inbox</a></p>')


def error_page(status: int, text: str) -> str:
    return layout(f"Error {status}", f'<h1>{status}</h1><p>{esc(text)}</p>'
                  '<p><a href="/">Back to your mail</a></p>')


def when(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%d %H:%M")
