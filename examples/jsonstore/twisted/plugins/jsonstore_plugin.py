"""
Makes the example backend ``jsonstore`` known to pymail.  This file must
sit in a ``twisted/plugins/`` directory (with no ``__init__.py``) on
``sys.path``; pymail finds it with ``twisted.plugin.getPlugins``.  Keep it
thin: the backend module is imported only when a factory is made.
"""

from twisted.plugin import IPlugin
from zope.interface import implementer

from pymail.interfaces import IMailStoreBackend


@implementer(IPlugin, IMailStoreBackend)
class JsonStoreBackend:
    name = "jsonstore"
    description = "Example backend: one JSON file per account (JSON, not for real mail)."

    def make_factory(self, reactor, options):
        if options:
            raise ValueError(f"jsonstore takes no options (got {', '.join(options)})")
        from jsonstore import JsonStoreFactory

        return JsonStoreFactory()


backend = JsonStoreBackend()
