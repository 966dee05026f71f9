"""The ``sqlite`` checker plugin: thin, and imports the checker only when used."""

from twisted.cred.strcred import ICheckerFactory
from twisted.plugin import IPlugin
from zope.interface import implementer


@implementer(IPlugin, ICheckerFactory)
class _SQLiteCheckerFactory:
    authType = "sqlite"
    authHelp = "Checks passwords against users(address, password_hash) in an SQLite file."
    argStringFormat = "Path of the SQLite file"

    @property
    def credentialInterfaces(self):
        from twisted.cred.credentials import IUsernamePassword

        return (IUsernamePassword,)

    def generateChecker(self, argstring=""):
        from sqlite_checker import SQLiteCheckerFactory

        return SQLiteCheckerFactory().generateChecker(argstring)


sqliteChecker = _SQLiteCheckerFactory()
