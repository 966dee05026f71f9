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


class _LazyCheckerFactory:
    """The strcred plugin object; the checker module is imported on first use."""

    authType = "pymail-passwd"
    authHelp = (
        "Checks passwords against a pymail accounts file (argon2id hashes). "
        "The argument is the path of the passwd file in pymail's data directory."
    )
    argStringFormat = "Path of the passwd file, e.g. /var/lib/pymail/passwd"

    @property
    def credentialInterfaces(self):
        from twisted.cred.credentials import IUsernamePassword

        return (IUsernamePassword,)

    def generateChecker(self, argstring=""):
        from pymail.auth.checkers import AccountsCheckerFactory

        return AccountsCheckerFactory().generateChecker(argstring)


def _provide_checker_factory():
    from twisted.cred.strcred import ICheckerFactory
    from twisted.plugin import IPlugin
    from zope.interface import directlyProvides

    factory = _LazyCheckerFactory()
    directlyProvides(factory, IPlugin, ICheckerFactory)
    return factory


pymailPasswdChecker = _provide_checker_factory()
