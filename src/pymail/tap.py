"""
``twistd pymail``: command-line options and the service maker.

Start-up problems (a bad configuration, a port in use) end the process with
one line on standard error naming the problem and a non-zero exit status,
not a traceback.
"""

from __future__ import annotations

from twisted.python import usage

from pymail.config import embedded_default, load
from pymail.errors import ConfigError, ListenError
from pymail.logobserver import observer_for_twistd
from pymail.service import PymailService, make_service, tune_allocator


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


def makeService(options: Options) -> PymailService:
    """
    Build and bind the service.  Binding here, before twistd starts logging
    and daemonizes, puts a port-in-use error on the terminal exactly like a
    configuration error (and, under ``--uid``, binds while still root).
    """
    from twisted.internet import reactor

    tune_allocator()
    try:
        config = load(options["config"]) if options["config"] else embedded_default()
        service = make_service(config, reactor)
        try:
            service.bind()
        except ListenError as e:
            raise ConfigError(f"{config.source}: {e}") from None
    except ConfigError as e:
        raise SystemExit(f"pymail: {e}") from None
    # twistd's own text observer flushes per line; ours writes the same
    # lines once per reactor turn (the options' parent is twistd's).
    service.log_observer = observer_for_twistd(getattr(options, "parent", None), reactor)
    return service
