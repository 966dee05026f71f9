"""
The mail pages: sign-in and sign-out, folders, the message list, a message,
its HTML body frame, attachments, actions (read, flag, move, delete),
search, compose and the live-update stream.
"""

from __future__ import annotations

import email.policy
from email.message import EmailMessage
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from urllib.parse import quote

from twisted.logger import Logger

from pymail.errors import NoSuchMessage
from pymail.interfaces import IMailbox
from pymail.smtp.replies import ReplyError
from pymail.web import views
from pymail.web.compose import ComposeError, Draft, build_message, check_form
from pymail.web.drafts import DRAFT_FLAGS, draft_message, drafts_folder, kept_attachments, resume
from pymail.web.events import MAX_STREAMS, EventStream
from pymail.web.http import Context, HTTPError, Response, body_csp
from pymail.web.messages import (
    MAX_QUERY,
    SEARCH_FIELDS,
    Attachment,
    FoundRow,
    Page,
    ParsedMessage,
    attachment,
    folder_list,
    page_of,
    header_text,
    parse,
    reply_addresses,
    role_folder,
    search,
    search_all,
    take_apart,
)
from pymail.web.sanitize import SanitisedHTML, sanitise_html
from pymail.web.sessions import SESSION_COOKIE, SIGNIN_COOKIE, new_token, tokens_match

if TYPE_CHECKING:
    from pymail.web.app import WebApp

log = Logger()

#: Fixed notices shown after an action (the URL names one; no text is reflected).
NOTICES = {
    "read": "Marked as read.",
    "unread": "Marked as unread.",
    "flag": "Flagged.",
    "unflag": "Flag removed.",
    "delete": "Moved to Trash.",
    "purged": "Deleted for good.",
    "move": "Moved.",
}

FOLDER = "([^/]+)"
UID = "([0-9]+)"


def add_routes(app: WebApp) -> None:
    r = app.router

    async def home(ctx: Context) -> Response:
        return Response.redirect("/mail/INBOX" if ctx.session else "/signin")

    async def signin_form(ctx: Context) -> Response:
        if ctx.session is not None:
            return Response.redirect("/mail/INBOX")
        token = new_token()
        app.set_cookie(ctx.request, SIGNIN_COOKIE, token, None)
        return Response.html(views.signin_page(token))

    async def signin(ctx: Context) -> Response:
        # Login CSRF: the form's token must match the cookie set with the form.
        cookie = ctx.request.getCookie(SIGNIN_COOKIE)
        expected = cookie.decode("ascii", "replace") if cookie else ""
        if not expected or not tokens_match(ctx.form.get("csrf"), expected):
            raise HTTPError(403, "The sign-in form was out of date; reload it and try again.")
        username = ctx.form.get("username")
        found = await app.sign_in(username, ctx.form.get("password"), ctx.client)
        if found is None:
            token = new_token()
            app.set_cookie(ctx.request, SIGNIN_COOKIE, token, None)
            return Response.html(views.signin_page(
                token, "Wrong email address or password.", username), 401)
        account, logout = found
        session = app.sessions.create(account, logout)
        app.set_cookie(ctx.request, SESSION_COOKIE, session.id, app.sessions.lifetime)
        app.set_cookie(ctx.request, SIGNIN_COOKIE, "", 0)
        log.info("web sign-in: {account} from {client}", account=session.address,
                 client=ctx.client)
        return Response.redirect("/mail/INBOX")

    async def signout(ctx: Context) -> Response:
        app.sessions.end(ctx.require_session().id)
        app.set_cookie(ctx.request, SESSION_COOKIE, "", 0)
        return Response.redirect("/signin")

    async def requested_page(ctx: Context) -> tuple[IMailbox, Page]:
        (name,) = ctx.params
        mailbox = await app.mailbox(ctx, name)
        try:
            number = int(ctx.query.get("page", "0"))
        except ValueError:
            number = 0
        return mailbox, page_of(mailbox, app.order.newest_first(mailbox), number, app.summaries)

    async def folder(ctx: Context) -> Response:
        mailbox, page = await requested_page(ctx)
        session = ctx.require_session()
        folders = await folder_list(session.account.store, app.counts)
        body = views.message_list(mailbox.name, page, folders, session.csrf,
                                  views_notice(ctx))
        data = {"folder": mailbox.name, "page": str(page.number),
                "events": "/events/" + quote(mailbox.name, safe="")}
        return await app.page(ctx, mailbox.name, body, mailbox.name, data, folders=folders)

    async def rows(ctx: Context) -> Response:
        """Just the rows of one page (the live update fetches this)."""
        mailbox, page = await requested_page(ctx)
        return Response.html(views.message_rows(mailbox.name, page.rows))

    async def message(ctx: Context) -> Response:
        name, uid_text = ctx.params
        mailbox = await app.mailbox(ctx, name)
        uid = app.uid(mailbox, uid_text)
        data = _read(mailbox, uid)
        show_images = ctx.query.get("images") == "1"

        def apart() -> tuple[ParsedMessage, int]:
            found = take_apart(data)
            if found.html is None:
                return found, 0
            return found, sanitise_html(found.html, allow_remote_images=False,
                                        inline_images=found.inline_images).blocked_images

        # A message can be tens of megabytes: take it apart off the reactor.
        parsed, blocked = await app.parse_in_thread(apart)
        flags = mailbox.info(uid).flags
        if "\\Seen" not in flags:
            new = await mailbox.set_flags([uid], ["\\Seen"], "add")
            flags = new.get(uid, flags)
        session = ctx.require_session()
        body = views.message_view(mailbox.name, uid, flags, parsed, session.csrf,
                                  show_images=show_images, blocked_images=blocked,
                                  prefer_text=ctx.query.get("text") == "1")
        subject = next((v for n, v in parsed.headers if n == "Subject"), "Message")
        return await app.page(ctx, subject, body, mailbox.name,
                              {"folder": mailbox.name, "uid": str(uid)})

    async def html_body(ctx: Context) -> Response:
        name, uid_text = ctx.params
        mailbox = await app.mailbox(ctx, name)
        uid = app.uid(mailbox, uid_text)
        data = _read(mailbox, uid)
        remote = ctx.query.get("images") == "1"

        def cleaned() -> SanitisedHTML:
            parsed = take_apart(data)
            return sanitise_html(parsed.html or "", allow_remote_images=remote,
                                 inline_images=parsed.inline_images)

        clean = await app.parse_in_thread(cleaned)
        page = ('<!doctype html><html><head><meta charset="utf-8">'
                '<base target="_blank"></head><body>' + clean.html + '</body></html>')
        return Response(page.encode("utf-8"), headers={
            "Content-Security-Policy": body_csp(remote),
            "X-Frame-Options": "SAMEORIGIN",
        })

    async def raw(ctx: Context) -> Response:
        name, uid_text = ctx.params
        mailbox = await app.mailbox(ctx, name)
        uid = app.uid(mailbox, uid_text)
        return Response(_read(mailbox, uid), content_type="text/plain; charset=utf-8",
                        headers={"Content-Security-Policy": "default-src 'none'; sandbox"})

    async def part(ctx: Context) -> Response:
        name, uid_text, index_text = ctx.params[:3]
        mailbox = await app.mailbox(ctx, name)
        uid = app.uid(mailbox, uid_text)
        whole = _read(mailbox, uid)
        try:
            index = int(index_text)
            found, data = await app.parse_in_thread(lambda: attachment(whole, index))
        except (KeyError, ValueError):
            raise HTTPError(404, "There is no such attachment.") from None
        disposition = "attachment; filename*=UTF-8''" + quote(found.filename, safe="")
        ascii_name = found.filename.encode("ascii", "replace").decode().replace("?", "_")
        disposition = f'attachment; filename="{ascii_name}"; ' + disposition.split("; ", 1)[1]
        return Response(data, content_type=_download_type(found.content_type), headers={
            "Content-Disposition": disposition,
            "Content-Security-Policy": "default-src 'none'; sandbox",
        })

    async def actions(ctx: Context) -> Response:
        (name,) = ctx.params
        mailbox = await app.mailbox(ctx, name)
        action = ctx.form.get("action")
        uids = []
        for text in ctx.form.all("uid"):
            try:
                uid = int(text)
            except ValueError:
                continue
            if _exists(mailbox, uid):
                uids.append(uid)
        store = ctx.require_session().account.store
        done = action
        if action in ("read", "unread", "flag", "unflag"):
            flag = "\\Seen" if action in ("read", "unread") else "\\Flagged"
            mode = "add" if action in ("read", "flag") else "remove"
            if uids:
                await mailbox.set_flags(uids, [flag], mode)
        elif action == "delete":
            trash = await role_folder(store, "\\Trash", "Trash")
            if trash is mailbox or trash.name == mailbox.name:
                await _purge(mailbox, uids)
                done = "purged"
            else:
                await _move(mailbox, trash, uids)
        elif action == "move":
            target = await app.mailbox(ctx, ctx.form.get("target"))
            if target.name != mailbox.name:
                await _move(mailbox, target, uids)
        else:
            raise HTTPError(400, "Unknown action.")
        if ctx.form.get("back") == "message" and len(uids) == 1 and _exists(mailbox, uids[0]):
            return Response.redirect(views.message_url(mailbox.name, uids[0]))
        return Response.redirect(views.folder_url(mailbox.name) + f"?done={done}")

    searching: dict[str, object] = {}  # account -> the search it is running

    async def find(ctx: Context) -> Response | None:
        name = ctx.query.get("folder", "INBOX")
        field = ctx.query.get("field", "subject")
        query = ctx.query.get("q").strip()
        if field not in SEARCH_FIELDS:
            raise HTTPError(400, f"Search in one of: {', '.join(SEARCH_FIELDS)}.")
        if len(query) > MAX_QUERY:
            raise HTTPError(400, f"The search text is too long ({len(query)} characters; "
                            f"at most {MAX_QUERY} characters).")
        session = ctx.require_session()
        store = session.account.store
        mailbox = await app.mailbox(ctx, name) if name else None
        found: list[FoundRow] = []
        if query:
            # One search per account at a time (a text search of every folder
            # reads every message), and none goes on for a browser that left.
            if session.address in searching:
                raise HTTPError(429, "A search of this account is still running; wait for "
                                "its results, then search again.")
            mine = searching[session.address] = object()
            gone: list[object] = []

            def left(reason: object) -> None:
                # A search abandoned (a double click on Search, a closed tab)
                # frees the account's slot at once; it stops at its next pause.
                gone.append(reason)
                if searching.get(session.address) is mine:
                    del searching[session.address]

            ctx.request.notifyFinish().addErrback(left)

            async def pause() -> None:
                await app.pause()
                if gone:
                    raise _SearchAbandoned()

            try:
                if mailbox is None:
                    found = await search_all(store, app.order, field, query, app.summaries,
                                             pause)
                else:
                    rows = await search(mailbox, app.order.newest_first(mailbox), field,
                                        query, app.summaries, pause)
                    found = [FoundRow(mailbox.name, row) for row in rows]
            except _SearchAbandoned:
                log.info("web: search by {account} stopped: the browser left",
                         account=session.address)
                return None  # nobody to answer
            finally:
                if searching.get(session.address) is mine:
                    del searching[session.address]
        folders = await folder_list(store, app.counts)
        if mailbox is None:  # every folder
            body = views.search_results(None, field, query, found, folders, session.csrf)
            return await app.page(ctx, "Search", body, folders=folders,
                                  search=views.SearchState(field, query, everywhere=True))
        body = views.search_results(mailbox.name, field, query, found, folders, session.csrf)
        return await app.page(ctx, "Search", body, mailbox.name, folders=folders,
                              search=views.SearchState(field, query))

    async def compose_form(ctx: Context) -> Response:
        session = ctx.require_session()
        reply = ctx.query.get("reply")
        mode = ctx.query.get("mode", "reply")
        fields: dict[str, str] = {}
        forwarding = None
        draft_ref = ctx.query.get("draft")
        kept: tuple[Attachment, ...] = ()
        original_folder = None
        if draft_ref:
            box, uid = await _locate_draft(app, ctx, draft_ref)
            data = _read(box, uid)
            resumed = await app.parse_in_thread(lambda: resume(data))
            fields.update(to=resumed.to, cc=resumed.cc, bcc=resumed.bcc,
                          subject=resumed.subject, body=resumed.body)
            reply, mode, kept = resumed.reply, resumed.mode, resumed.attachments
            # The draft's reply link is only a claim (any IMAP client can
            # write one): it must name a message of this account, and the
            # form shows which one it really is.
            linked = await _linked(app, ctx, reply) if reply else None
            if linked is None:
                reply = mode = ""
            else:
                original_folder = linked[0].name
                answered = header_text(await _parsed(app, *linked), "Subject")
                if mode == "forward":
                    forwarding = answered
        elif reply:
            box, uid = await _locate(app, ctx, reply)
            original = await _parsed(app, box, uid)
            original_folder = box.name
            subject = header_text(original, "Subject")
            if mode == "forward":
                fields["subject"] = subject if subject.lower().startswith("fwd:") \
                    else f"Fwd: {subject}"
                forwarding = subject
            else:
                to, cc = reply_addresses(original, session.address, mode == "all")
                fields.update(to=to, cc=cc)
                fields["subject"] = subject if subject.lower().startswith("re:") \
                    else f"Re: {subject}"
                text = take_apart(original.as_bytes(policy=email.policy.SMTP)).text or ""
                quoted = "\n".join("> " + line for line in text.splitlines())
                sender = header_text(original, "From")
                fields["body"] = f"\n\n{sender} wrote:\n{quoted}\n"
        body = views.compose_page(session.csrf, reply=reply, mode=mode if reply else "",
                                  forwarding=forwarding, draft=draft_ref, kept=kept,
                                  original_folder=original_folder,
                                  saved=ctx.query.get("done") == "saved",
                                  max_bytes=app.max_message_size, **fields)
        return await app.page(ctx, "Compose", body)

    async def send(ctx: Context) -> Response:
        session = ctx.require_session()
        form = ctx.form
        reply = form.get("reply")
        mode = form.get("mode")
        draft_ref = form.get("draft")
        old_draft: tuple[IMailbox, int] | None = None
        old_data = b""
        if draft_ref:
            old_draft = await _locate_draft(app, ctx, draft_ref)
            old_data = _read(*old_draft)
        saving = form.get("action") == "draft"

        async def again(error: str) -> Response:
            listed = await app.parse_in_thread(lambda: take_apart(old_data).attachments) \
                if old_data else []
            kept = tuple(a for a in listed if str(a.index) in form.all("keep"))
            body = views.compose_page(
                session.csrf, to=form.get("to"), cc=form.get("cc"), bcc=form.get("bcc"),
                subject=form.get("subject"), body=form.get("body"), reply=reply, mode=mode,
                error=error, draft=draft_ref, kept=kept, max_bytes=app.max_message_size)
            return await app.page(ctx, "Compose", body, status=400)

        # A draft may be tens of megabytes: taken apart in the pool.
        keep = form.all("keep")
        kept_files = await app.parse_in_thread(lambda: kept_attachments(old_data, keep)) \
            if old_data else ()
        try:
            draft = check_form(form.get("to"), form.get("cc"), form.get("bcc"),
                               form.get("subject"), form.get("body"),
                               kept_files + tuple(form.files),
                               need_recipients=not saving)
        except ComposeError as e:
            return await again(str(e))
        now = datetime.fromtimestamp(app.clock.seconds(), UTC)
        if saving:
            return await save_draft(ctx, draft, reply, mode, old_draft, now, again)
        original_box: IMailbox | None = None
        original_uid = 0
        linked = await _linked(app, ctx, reply) if reply else None
        if reply and linked is None:
            if mode == "forward":
                return await again("Not sent: the forwarded message is no longer there "
                                   "(deleted or moved since); attach it again from its folder.")
            # A reply whose original went is still a reply; it just cannot be threaded.
            log.info("web: {account} sends a reply to {reply!r}, which is gone",
                     account=session.address, reply=reply)
        if linked is not None:
            original_box, original_uid = linked
            original = await _parsed(app, original_box, original_uid)
            if mode == "forward":
                draft = _evolve(draft, forwarded=original.as_bytes(policy=email.policy.SMTP))
            else:
                message_id = header_text(original, "Message-ID")
                if message_id:
                    refs = header_text(original, "References")
                    draft = _evolve(draft, in_reply_to=message_id,
                                    references=f"{refs} {message_id}".strip())
        message = build_message(draft, session.address, app.submitter.hostname, now)
        if app.max_message_size is not None and len(message) > app.max_message_size:
            # The submission port's SIZE limit (attachments grow by a third in base64).
            return await again(f"Not sent: the message is too large ({len(message)} octets "
                               f"with attachments encoded; at most {app.max_message_size}).")
        try:
            sent = await app.submitter.submit(session.account, ctx.client, draft, message)
        except ReplyError as e:
            return await again(f"Not sent: {e.reply.text}")
        if original_box is not None and mode != "forward" and _exists(original_box,
                                                                      original_uid):
            await original_box.set_flags([original_uid], ["\\Answered"], "add")
        if old_draft is not None and _exists(*old_draft):
            await _purge(old_draft[0], [old_draft[1]])  # sent: the draft has done its job
        return await app.page(ctx, "Sent", views.sent_page(
            sent.queue_id, len(sent.delivered_to), len(sent.queued_for)))

    async def save_draft(ctx: Context, draft: Draft, reply: str, mode: str,
                         old: tuple[IMailbox, int] | None, now: datetime,
                         again: Callable[[str], Awaitable[Response]]) -> Response:
        """Store the form in Drafts (durably), then remove the copy it replaces."""
        session = ctx.require_session()
        try:
            data = draft_message(draft, session.address, app.submitter.hostname, now,
                                 reply, mode)
        except ComposeError as e:
            return await again(str(e))
        if app.max_message_size is not None and len(data) > app.max_message_size:
            return await again(f"Not saved: the draft is too large ({len(data)} octets; "
                               f"at most {app.max_message_size}).")
        box = await drafts_folder(session.account.store)
        uid = await box.append(data, DRAFT_FLAGS)
        if old is not None and _exists(*old) and not (old[0].name == box.name
                                                      and old[1] == uid):
            await _purge(old[0], [old[1]])
        ref = quote(box.name, safe="") + f"/{uid}"
        return Response.redirect(f"/compose?draft={quote(ref, safe='')}&done=saved")

    open_streams: dict[str, int] = {}  # account -> live event streams

    def stream_closed(address: str) -> None:
        left = open_streams.get(address, 1) - 1
        if left > 0:
            open_streams[address] = left
        else:
            open_streams.pop(address, None)

    async def events(ctx: Context) -> None:
        (name,) = ctx.params
        mailbox = await app.mailbox(ctx, name)
        session = ctx.require_session()
        address = session.address
        if open_streams.get(address, 0) >= MAX_STREAMS:
            # 429, not a stream: EventSource does not retry a failed connection.
            raise HTTPError(429, f"Too many live folder views are open for this account "
                                 f"(at most {MAX_STREAMS}); close some tabs and reload.")
        open_streams[address] = open_streams.get(address, 0) + 1
        ctx.request.notifyFinish().addBoth(lambda _: stream_closed(address))
        stream = EventStream(ctx.request, mailbox, app.clock,
                             lambda: app.sessions.get(session.id, touch=False) is not None)
        stream.start()
        return None

    r.add("GET", "/", home, public=True)
    r.add("GET", "/signin", signin_form, public=True)
    r.add("POST", "/signin", signin, public=True)
    r.add("POST", "/signout", signout)
    r.add("GET", f"/mail/{FOLDER}", folder)
    r.add("GET", f"/mail/{FOLDER}/rows", rows)
    r.add("POST", f"/mail/{FOLDER}/actions", actions)
    r.add("GET", f"/mail/{FOLDER}/{UID}", message)
    r.add("GET", f"/mail/{FOLDER}/{UID}/html", html_body)
    r.add("GET", f"/mail/{FOLDER}/{UID}/raw", raw)
    r.add("GET", f"/mail/{FOLDER}/{UID}/part/([0-9]+)(?:/([^/]*))?", part)
    r.add("GET", "/search", find)
    r.add("GET", "/compose", compose_form)
    r.add("POST", "/compose", send)
    r.add("GET", f"/events/{FOLDER}", events)


class _SearchAbandoned(Exception):
    """The browser that asked for a search has gone; stop reading messages."""


def views_notice(ctx: Context) -> str | None:
    return NOTICES.get(ctx.query.get("done"))


def _exists(mailbox: IMailbox, uid: int) -> bool:
    try:
        mailbox.info(uid)
    except NoSuchMessage:
        return False
    return True


def _read(mailbox: IMailbox, uid: int) -> bytes:
    try:
        return mailbox.read(uid)
    except NoSuchMessage:
        raise HTTPError(404, "The message is gone.") from None


def _download_type(content_type: str) -> str:
    # Never hand the browser a type it would render as a page of ours.
    if content_type in ("text/html", "application/xhtml+xml", "image/svg+xml", "text/xml",
                        "application/xml"):
        return "application/octet-stream"
    return content_type


async def _move(source: IMailbox, target: IMailbox, uids: list[int]) -> None:
    """Copy each message durably into ``target``, then expunge it from ``source``."""
    moved = []
    for uid in uids:
        try:
            info = source.info(uid)
            data = source.read(uid)
        except NoSuchMessage:
            continue
        await target.append(data, info.flags - {"\\Deleted"}, info.internaldate)
        moved.append(uid)
    await _purge(source, moved)


async def _purge(mailbox: IMailbox, uids: list[int]) -> None:
    if uids:
        await mailbox.set_flags(uids, ["\\Deleted"], "add")
        await mailbox.expunge(uids)


async def _locate(app: WebApp, ctx: Context, reference: str) -> tuple[IMailbox, int]:
    """``folder/uid`` (as the compose links give it) -> the folder and UID."""
    name, _, uid_text = reference.rpartition("/")
    from urllib.parse import unquote

    mailbox = await app.mailbox(ctx, unquote(name))
    return mailbox, app.uid(mailbox, uid_text)


async def _linked(app: WebApp, ctx: Context, reference: str) -> tuple[IMailbox, int] | None:
    """What a reply link (``folder/uid``) names in the signed-in account, or ``None``."""
    try:
        return await _locate(app, ctx, reference)
    except HTTPError:
        return None


async def _locate_draft(app: WebApp, ctx: Context, reference: str) -> tuple[IMailbox, int]:
    """
    A draft (``folder/uid``) of the signed-in account: only a message with
    ``\\Draft`` may be resumed, saved over or removed when sent.
    """
    mailbox, uid = await _locate(app, ctx, reference)
    if "\\Draft" not in mailbox.info(uid).flags:
        raise HTTPError(404, "That message is not a draft.")
    return mailbox, uid


async def _parsed(app: WebApp, mailbox: IMailbox, uid: int) -> EmailMessage:
    """The message, parsed in the pool (see :meth:`WebApp.parse_in_thread`)."""
    data = _read(mailbox, uid)
    return await app.parse_in_thread(lambda: parse(data))


def _evolve(draft: Draft, **changes: object) -> Draft:
    import attrs

    return attrs.evolve(draft, **changes)  # type: ignore[arg-type]


__all__ = ["add_routes"]
