"""
Account pages: change one's own password; for the administrators named in
``[web] admins``, domains, users and aliases (the same operations, and the
same checks, as the ``pymail`` command); the client settings page and the
Thunderbird autoconfig file.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING
from xml.sax.saxutils import escape as xml_escape

from twisted.logger import Logger

from pymail.directory.passwords import hash_password, scram_credential
from pymail.errors import DirectoryError
from pymail.web import views
from pymail.web.http import Context, HTTPError, Response
from pymail.web.views import csrf_field, esc, notice

if TYPE_CHECKING:
    from pymail.web.app import ClientSettings, WebApp

log = Logger()

#: Shortest new password accepted on the web, in characters.
MIN_PASSWORD_LENGTH = 10


#: Where Thunderbird looks for its autoconfig file on the mail domain's web server.
AUTOCONFIG_PATH = "/.well-known/autoconfig/mail/config-v1.1.xml"

#: Admin user actions after which the account's web sessions end.
SIGNS_OUT = ("disable", "password", "delete")

ADMIN_NOTICES = {
    "domain-added": "Domain added.", "domain-deleted": "Domain deleted.",
    "user-added": "Account added.", "user-deleted": "Account deleted (its mail stays on disk).",
    "user-disabled": "Account disabled.", "user-enabled": "Account enabled.",
    "password-set": "Password set.", "alias-added": "Alias added.",
    "alias-deleted": "Alias deleted.",
}


def add_routes(app: WebApp) -> None:
    r = app.router

    async def account_page(ctx: Context, error: str | None = None, done: str | None = None,
                           status: int = 200) -> Response:
        session = ctx.require_session()
        body = (
            f'<h1>Account</h1><p>Signed in as <strong>{esc(session.address)}</strong>.</p>'
            + notice(error, "error") + notice(done)
            + '<h2>Change password</h2><form method="post" action="/account/password" '
            f'class="stacked">{csrf_field(session.csrf)}'
            '<label>Current password<input type="password" name="current" '
            'autocomplete="current-password" required></label>'
            '<label>New password<input type="password" name="new" autocomplete="new-password" '
            f'minlength="{MIN_PASSWORD_LENGTH}" required></label>'
            '<label>New password again<input type="password" name="confirm" '
            'autocomplete="new-password" required></label>'
            '<button class="primary">Change password</button></form>'
        )
        return await app.page(ctx, "Account", body, status=status)

    async def account(ctx: Context) -> Response:
        done = "Your password was changed." if ctx.query.get("done") == "password" else None
        return await account_page(ctx, done=done)

    async def change_password(ctx: Context) -> Response:
        session = ctx.require_session()
        new = ctx.form.get("new")
        if new != ctx.form.get("confirm"):
            return await account_page(ctx, "The two new passwords differ.", status=400)
        if len(new) < MIN_PASSWORD_LENGTH:
            return await account_page(
                ctx, f"The new password is too short (at least {MIN_PASSWORD_LENGTH} "
                "characters).", status=400)
        checked = await app.sign_in(session.address, ctx.form.get("current"), ctx.client)
        if checked is None:
            return await account_page(ctx, "The current password is wrong.", status=400)
        checked[1]()  # the avatar from the check is not kept
        # Hashing (argon2id) and the directory's fsynced rewrite stay off the reactor.
        await app.in_thread(lambda: app.directory.set_password(
            session.address, hash_password(new), scram_credential(new)))
        ended = app.sessions.end_others(session.address, session.id)
        log.info("web: {account} changed their password ({ended} other sessions ended)",
                 account=session.address, ended=ended)
        return Response.redirect("/account?done=password")

    def admin_body(csrf: str, error: str | None, done: str | None) -> str:
        directory = app.directory
        domains = "".join(
            f'<li>{esc(d)} <form method="post" action="/admin/domains" class="inline">'
            f'{csrf_field(csrf)}<input type="hidden" name="domain" value="{esc(d)}">'
            '<button name="action" value="delete" class="link">delete</button></form></li>'
            for d in directory.domains())
        users = []
        for u in directory.users():
            state = "disabled" if u.disabled else "enabled"
            toggle = "enable" if u.disabled else "disable"
            users.append(
                f'<tr><td>{esc(u.address)}</td><td>{state}</td><td>'
                f'<form method="post" action="/admin/users" class="inline">{csrf_field(csrf)}'
                f'<input type="hidden" name="address" value="{esc(u.address)}">'
                f'<button name="action" value="{toggle}" class="link">{toggle}</button>'
                '<button name="action" value="delete" class="link">delete</button>'
                '<input type="password" name="password" placeholder="new password" '
                'autocomplete="new-password" aria-label="New password">'
                '<button name="action" value="password" class="link">set password</button>'
                '</form></td></tr>')
        aliases = "".join(
            f'<li>{esc(a)} &rarr; {esc(", ".join(t))} <form method="post" '
            f'action="/admin/aliases" class="inline">{csrf_field(csrf)}'
            f'<input type="hidden" name="alias" value="{esc(a)}">'
            '<button name="action" value="delete" class="link">delete</button></form></li>'
            for a, t in sorted(directory.aliases().items()))
        return (
            '<h1>Administration</h1>' + notice(error, "error") + notice(done)
            + f'<h2>Domains</h2><ul>{domains}</ul><form method="post" action="/admin/domains" '
            f'class="inline">{csrf_field(csrf)}<input name="domain" placeholder="example.org" '
            'aria-label="Domain" required><button name="action" value="add">Add domain</button>'
            '</form>'
            '<h2>Users</h2><table class="admin"><thead><tr><th>Account</th><th>State</th>'
            f'<th></th></tr></thead><tbody>{"".join(users)}</tbody></table>'
            f'<form method="post" action="/admin/users" class="inline">{csrf_field(csrf)}'
            '<input name="address" placeholder="alice@example.org" aria-label="Address" required>'
            '<input type="password" name="password" placeholder="password" '
            'autocomplete="new-password" aria-label="Password" required>'
            '<button name="action" value="add">Add user</button></form>'
            f'<h2>Aliases</h2><ul>{aliases}</ul><form method="post" action="/admin/aliases" '
            f'class="inline">{csrf_field(csrf)}<input name="alias" placeholder='
            '"sales@example.org" aria-label="Alias" required><input name="targets" '
            'placeholder="alice@example.org, bob@example.org" aria-label="Targets" required>'
            '<button name="action" value="add">Add alias</button></form>'
        )

    async def admin(ctx: Context) -> Response:
        session = ctx.require_session()
        done = ADMIN_NOTICES.get(ctx.query.get("done"))
        return await app.page(ctx, "Administration", admin_body(session.csrf, None, done))

    async def admin_change(ctx: Context, work: Callable[[], object], done: str) -> Response:
        try:
            await app.in_thread(work)
        except DirectoryError as e:
            session = ctx.require_session()
            return await app.page(ctx, "Administration", admin_body(session.csrf, str(e), None),
                                  status=400)
        log.info("web admin {admin}: {done}", admin=ctx.require_session().address, done=done)
        return Response.redirect(f"/admin?done={done}")

    async def admin_domains(ctx: Context) -> Response:
        domain = ctx.form.get("domain").strip()
        action = ctx.form.get("action")
        if action == "add":
            return await admin_change(ctx, lambda: app.directory.add_domain(domain),
                                      "domain-added")
        if action == "delete":
            return await admin_change(ctx, lambda: app.directory.delete_domain(domain),
                                      "domain-deleted")
        raise HTTPError(400, "Unknown action.")

    async def admin_users(ctx: Context) -> Response:
        address = ctx.form.get("address").strip()
        password = ctx.form.get("password")
        action = ctx.form.get("action")
        if action in ("add", "password") and len(password) < MIN_PASSWORD_LENGTH:
            session = ctx.require_session()
            return await app.page(ctx, "Administration", admin_body(
                session.csrf, f"Passwords need at least {MIN_PASSWORD_LENGTH} characters.",
                None), status=400)
        d = app.directory
        works: dict[str, tuple[Callable[[], object], str]] = {
            "add": (lambda: d.add_user(address, hash_password(password),
                                       scram_credential(password)), "user-added"),
            "password": (lambda: d.set_password(address, hash_password(password),
                                               scram_credential(password)),
                         "password-set"),
            "delete": (lambda: d.delete_user(address), "user-deleted"),
            "disable": (lambda: d.set_disabled(address, True), "user-disabled"),
            "enable": (lambda: d.set_disabled(address, False), "user-enabled"),
        }
        if action not in works:
            raise HTTPError(400, "Unknown action.")
        work, done = works[action]
        response = await admin_change(ctx, work, done)
        if response.status == 303 and action in SIGNS_OUT:
            # A disabled, deleted or re-passworded account keeps no open browser.
            ended = app.sessions.end_others(address.lower(), ctx.require_session().id)
            log.info("web admin: {ended} web sessions of {address} ended", ended=ended,
                     address=address)
        return response

    async def admin_aliases(ctx: Context) -> Response:
        alias = ctx.form.get("alias").strip()
        action = ctx.form.get("action")
        if action == "add":
            targets = [t.strip() for t in ctx.form.get("targets").split(",") if t.strip()]
            return await admin_change(ctx, lambda: app.directory.add_alias(alias, targets),
                                      "alias-added")
        if action == "delete":
            return await admin_change(ctx, lambda: app.directory.delete_alias(alias),
                                      "alias-deleted")
        raise HTTPError(400, "Unknown action.")

    async def settings(ctx: Context) -> Response:
        session = ctx.require_session()
        return await app.page(ctx, "Settings", settings_body(app.settings, session.address))

    async def autoconfig(ctx: Context) -> Response:
        address = ctx.query.get("emailaddress")
        domain = address.rpartition("@")[2].lower()
        if not domain or not all(c.isalnum() or c in ".-" for c in domain):
            domain = app.settings.hostname
        return Response(autoconfig_xml(app.settings, domain).encode("utf-8"),
                        content_type="application/xml; charset=utf-8",
                        headers={"Cache-Control": "max-age=3600"})

    r.add("GET", "/account", account)
    r.add("POST", "/account/password", change_password)
    r.add("GET", "/admin", admin, admin=True)
    r.add("POST", "/admin/domains", admin_domains, admin=True)
    r.add("POST", "/admin/users", admin_users, admin=True)
    r.add("POST", "/admin/aliases", admin_aliases, admin=True)
    r.add("GET", "/settings", settings)
    # Only the exact well-known path (no /mail/config-v1.1.xml): every other
    # path under /mail/ is a folder, and a folder may have any name.
    r.add("GET", AUTOCONFIG_PATH, autoconfig, public=True)


def _security(kind: str) -> tuple[str, str]:
    """(autoconfig socketType, words for people) of a listener kind."""
    return {"tls": ("SSL", "SSL/TLS"), "starttls": ("STARTTLS", "STARTTLS"),
            "plain": ("plain", "none (plain text: loopback or test use only)")}[kind]


def settings_body(s: ClientSettings, address: str) -> str:
    rows = []
    for label, entries in (("IMAP (incoming)", s.imap), ("POP3 (incoming)", s.pop3),
                           ("SMTP submission (outgoing)", s.submission)):
        for port, kind in entries:
            rows.append(f'<tr><td>{esc(label)}</td><td>{esc(s.hostname)}</td><td>{port}</td>'
                        f'<td>{esc(_security(kind)[1])}</td></tr>')
    table = "".join(rows) or '<tr><td colspan="4">No mail client services are enabled.</td></tr>'
    return (
        '<h1>Mail client settings</h1>'
        f'<p>User name: <strong>{esc(address)}</strong> (your whole email address); '
        'password: your account password (normal password authentication).</p>'
        '<table class="settings"><thead><tr><th>Service</th><th>Server</th><th>Port</th>'
        f'<th>Connection security</th></tr></thead><tbody>{table}</tbody></table>'
        '<p>Thunderbird and other clients that read '
        f'<a href="{AUTOCONFIG_PATH}">the autoconfig file</a> '
        'set themselves up from your email address.</p>'
    )


def autoconfig_xml(s: ClientSettings, domain: str) -> str:
    """The Thunderbird autoconfig file (clientConfig version 1.1)."""
    def server(tag: str, kind: str, port: int, security: str) -> str:
        return (f'    <{tag} type="{kind}">\n'
                f'      <hostname>{xml_escape(s.hostname)}</hostname>\n'
                f'      <port>{port}</port>\n'
                f'      <socketType>{_security(security)[0]}</socketType>\n'
                '      <authentication>password-cleartext</authentication>\n'
                '      <username>%EMAILADDRESS%</username>\n'
                f'    </{tag}>\n')

    servers = "".join(server("incomingServer", "imap", p, k) for p, k in s.imap)
    servers += "".join(server("incomingServer", "pop3", p, k) for p, k in s.pop3)
    servers += "".join(server("outgoingServer", "smtp", p, k) for p, k in s.submission)
    d = xml_escape(domain, {'"': "&quot;"})
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<clientConfig version="1.1">\n'
            f'  <emailProvider id="{d}">\n    <domain>{d}</domain>\n'
            f'    <displayName>{d} mail</displayName>\n'
            f'    <displayShortName>{d}</displayShortName>\n{servers}'
            '  </emailProvider>\n</clientConfig>\n')


__all__ = ["AUTOCONFIG_PATH", "add_routes", "autoconfig_xml", "settings_body", "views"]
