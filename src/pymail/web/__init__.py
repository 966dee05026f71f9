"""
Webmail and web account management, served by the same process as SMTP,
IMAP and POP3 (see docs/webmail.md).

Everything goes through the same parts the other protocols use: sign-in
through the portal (:mod:`pymail.web.auth`), mail through the account's
:class:`~pymail.interfaces.IMailStore`, live updates through
:class:`~pymail.interfaces.IMailboxListener`, and sending through the SMTP
delivery policy (:mod:`pymail.web.compose`).  :func:`pymail.web.app.make_site`
builds the ``twisted.web`` site.
"""
