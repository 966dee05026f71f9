"""
``twistd pymail``: command-line options and the service maker.

Start-up problems (a bad configuration, a port in use) end the process with
one line on standard error naming the problem and a non-zero exit status,
not a traceback.
"""

from __future__ import annotations

from twisted.application.service import MultiService
from twisted.python import usage

from pymail.config import embedded_default, load
from pymail.errors import ConfigError, ListenError
from pymail.service import PymailService, make_service


class Options(usage.Options):
    synopsis = "[--config FILE]"
    longdesc = (
        "Run the pymail mail server (SMTP, submission, IMAP4, POP3). Without --config it "
        "runs on an embedded default: loopback only, SMTP 2525, submission 2587, IMAP 1143, "
        "POP3 1110, data in ./pymail-data, domain localhost.\n\n"
        "Example: twistd -n pymail --config /etc/pymail/pymail.toml"
    )
    optParameters = [
        ["config", "c", None, "Path of the TOML configuration file (see docs/configuration.md)."],
    ]


class TwistdService(MultiService):
    """
    Holds the :class:`PymailService` under twistd and turns a listen
    failure into a one-line message and exit status 1.
    """

    def __init__(self, pymail: PymailService) -> None:
        super().__init__()
        self.pymail = pymail
        pymail.setServiceParent(self)

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except ListenError as e:
            raise SystemExit(f"pymail: {self.pymail.components.config.source}: {e}") from None


def makeService(options: Options) -> TwistdService:
    from twisted.internet import reactor

    try:
        config = load(options["config"]) if options["config"] else embedded_default()
        return TwistdService(make_service(config, reactor))
    except ConfigError as e:
        raise SystemExit(f"pymail: {e}") from None
