"""
pymail's Twisted plugins: the ``twistd pymail`` service maker, the
``pymail-passwd`` cred checker factory and the built-in storage backends.

Deliberately thin and lazy: importing this file (which ``twistd --help``
does for every plugin) must not import the server.  No ``__init__.py`` may
sit beside this file.
"""

from twisted.application.service import ServiceMaker

pymail = ServiceMaker(
    "pymail",
    "pymail.tap",
    "A mail server: SMTP, submission, IMAP4 and POP3 in one process.",
    "pymail",
)
