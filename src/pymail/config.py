"""
The configuration: a TOML file read into frozen attrs classes.

Every key, its type, its default and a one-line description live in one
table, :data:`SCHEMA`; docs/configuration.md documents the same keys (a test
keeps the two in step).  A configuration that cannot be used raises
:class:`~pymail.errors.ConfigError` with one message naming the file, the
key, the bad value and what would be accepted, before any socket is opened.

With no file at all, :func:`embedded_default` gives a configuration that is
safe to run anywhere: loopback only, unprivileged ports, data in
``./pymail-data``, domain ``localhost``.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Mapping
from typing import Any

import attrs

from pymail.errors import ConfigError


@attrs.frozen
class Key:
    """One configuration key: its type, default and meaning."""

    type: type | tuple[type, ...]
    default: Any
    doc: str
    minimum: int | None = None
    choices: tuple[str, ...] | None = None


#: section ("" for top level) -> key -> Key.  The one table of defaults.
SCHEMA: dict[str, dict[str, Key]] = {
    "": {
        "hostname": Key(str, "localhost", "Name used in greetings, Received headers and EHLO."),
        "data_dir": Key(str, "/var/lib/pymail", "Directory for accounts, mail, queue, indexes."),
        "domains": Key(
            list,
            [],
            "Domains to create at start-up if the account database lacks them "
            "(more with `pymail domain add`).",
        ),
        "auth": Key(
            list,
            [],
            "twisted.cred strcred checker strings (e.g. 'pymail-passwd:/var/lib/pymail/passwd'); "
            "[] checks pymail's own accounts file.",
        ),
    },
    "smtp": {
        "listen": Key(list, ["tcp:25"], "Endpoints of the MX service; [] turns it off."),
        "max_message_size": Key(
            int, 35 * 1024 * 1024, "Largest message accepted, in octets (SIZE).", minimum=1024
        ),
        "max_recipients": Key(int, 100, "Recipients accepted per message.", minimum=1),
        "timeout": Key(int, 300, "Seconds a client may stay silent.", minimum=1),
        "max_received": Key(
            int, 50, "Received headers beyond which a message is a loop (554 5.4.6).", minimum=1
        ),
    },
    "submission": {
        "listen": Key(list, ["tcp:587"], "Endpoints of the submission service; [] turns it off."),
        "listen_tls": Key(list, [], "Implicit-TLS submission endpoints (port 465); needs [tls]."),
    },
    "imap": {
        "listen": Key(list, ["tcp:143"], "Endpoints of the IMAP4 service; [] turns it off."),
        "listen_tls": Key(list, [], "Implicit-TLS IMAP endpoints (port 993); needs [tls]."),
        "max_literal_size": Key(
            int, 64 * 1024 * 1024, "Largest literal (APPEND) accepted, in octets.", minimum=1024
        ),
        "idle_timeout": Key(
            int, 1800, "Seconds of silence before autologout (RFC 3501: >= 1800).", minimum=1
        ),
    },
    "pop3": {
        "listen": Key(list, ["tcp:110"], "Endpoints of the POP3 service; [] turns it off."),
        "listen_tls": Key(list, [], "Implicit-TLS POP3 endpoints (port 995); needs [tls]."),
        "timeout": Key(int, 600, "Seconds of silence before autologout (RFC 1939: >= 600).",
                       minimum=1),
    },
    "storage": {
        "backend": Key(str, "maildir", "Storage backend: 'maildir', 'memory' or a plugin name."),
        "domains": Key(list, [], "Per-domain backends, e.g. [\"example.org=mbox\"]."),
        "options": Key(
            list, [], "Backend options, e.g. [\"mbox.inbox=/var/mail/{local}\"]."
        ),
    },
    "relay": {
        "enabled": Key(
            bool, True, "Queue mail from authenticated users to other domains and deliver it."
        ),
        "retry_schedule": Key(
            list,
            ["1m", "5m", "15m", "30m", "1h", "2h", "4h", "8h"],
            "Waits between delivery attempts (s, m, h, d); the last one repeats.",
        ),
        "max_queue_lifetime": Key(
            int, 5 * 86400, "Seconds a message is retried before it bounces.", minimum=60
        ),
        "delay_warning": Key(
            int, 0, "Seconds in the queue before the sender is warned (DELAY DSN); 0: never.",
            minimum=0,
        ),
        "concurrency_per_domain": Key(
            int, 10, "Connections at once to one destination domain.", minimum=1
        ),
        "nameservers": Key(
            list, [], "DNS servers ('192.0.2.53', '[2001:db8::53]:5353'); [] uses resolv.conf."
        ),
        "dns_timeout": Key(int, 10, "Seconds a DNS lookup may take before it is retried later.",
                           minimum=1),
        "port": Key(int, 25, "TCP port of remote MX hosts (tests use another).", minimum=1),
        "bind_address": Key(str, "", "Local IP address outgoing connections come from."),
        "smarthost": Key(
            str, "", "Send everything through this host ('host' or 'host:port'); '' uses MX."
        ),
        "smarthost_username": Key(str, "", "AUTH user name for the smarthost; '' for none."),
        "smarthost_password": Key(str, "", "AUTH password for the smarthost."),
        "scan_interval": Key(
            int, 60, "Seconds between re-reads of the queue directory (pymail queue ...).",
            minimum=1,
        ),
    },
    "web": {
        "listen": Key(list, [], "Endpoints of the webmail (HTTP) service; [] turns it off."),
        "listen_tls": Key(
            list, [], "Implicit-TLS (HTTPS) webmail endpoints (port 443); needs [tls]."
        ),
        "session_lifetime": Key(
            int, 8 * 3600, "Seconds a webmail session lasts after sign-in.", minimum=60
        ),
        "idle_timeout": Key(
            int, 1800, "Seconds without a request before a webmail session ends.", minimum=60
        ),
        "admins": Key(
            list, [], "Accounts that may manage domains, users and aliases on the web."
        ),
    },
    "tls": {
        "certificate": Key(str, "", "PEM certificate (and chain); '' means no TLS."),
        "key": Key(str, "", "PEM private key; '' means it is in the certificate file."),
        "sni": Key(dict, {}, "Host name -> {certificate, key} for clients that send SNI."),
    },
    "security": {
        "cleartext_auth": Key(
            str, "loopback",
            "Where passwords may be sent without TLS: 'tls' (never), 'loopback', 'always'.",
            choices=("tls", "loopback", "always"),
        ),
        "auth_failure_min_ms": Key(
            int, 400, "Every failed login is answered no sooner than this (milliseconds).",
            minimum=0,
        ),
        "auth_delay_ms": Key(
            int, 500, "Delay after a failed login, doubled per further failure (ms).", minimum=0
        ),
        "auth_max_delay_ms": Key(int, 8000, "Cap of the growing delay (ms).", minimum=0),
        "auth_block_after": Key(
            int, 10, "Failed logins from one client address before it is blocked.", minimum=1
        ),
        "auth_account_block_after": Key(
            int, 50, "Failed logins for one account (any address) before it is blocked.",
            minimum=1,
        ),
        "auth_block_seconds": Key(int, 900, "How long a block lasts.", minimum=1),
        "auth_window_seconds": Key(
            int, 900, "Failures older than this are forgotten.", minimum=1
        ),
        "max_connections": Key(int, 10000, "Connections open at once, all listeners.", minimum=1),
        "max_connections_per_ip": Key(
            int, 100, "Connections open at once from one client address.", minimum=1
        ),
        "preauth_timeout": Key(
            int, 120, "Seconds an IMAP/POP3/submission client has to log in.", minimum=1
        ),
    },
}

#: What ``twistd -n pymail`` uses with no ``--config``.
EMBEDDED_DEFAULT: dict[str, Any] = {
    "hostname": "localhost",
    "data_dir": "./pymail-data",
    "domains": ["localhost"],
    "smtp": {"listen": ["tcp:2525:interface=127.0.0.1"]},
    "submission": {"listen": ["tcp:2587:interface=127.0.0.1"]},
    "imap": {"listen": ["tcp:1143:interface=127.0.0.1"]},
    "pop3": {"listen": ["tcp:1110:interface=127.0.0.1"]},
    "web": {"listen": ["tcp:8080:interface=127.0.0.1"]},
}


@attrs.frozen
class SMTPConfig:
    listen: tuple[str, ...]
    max_message_size: int
    max_recipients: int
    timeout: int
    max_received: int = 50


@attrs.frozen
class SubmissionConfig:
    listen: tuple[str, ...]
    listen_tls: tuple[str, ...] = ()


@attrs.frozen
class IMAPConfig:
    listen: tuple[str, ...]
    max_literal_size: int
    idle_timeout: int
    listen_tls: tuple[str, ...] = ()


@attrs.frozen
class POP3Config:
    listen: tuple[str, ...]
    timeout: int
    listen_tls: tuple[str, ...] = ()


@attrs.frozen
class StorageConfig:
    backend: str
    domains: tuple[str, ...] = ()
    options: tuple[str, ...] = ()


@attrs.frozen
class RelayConfig:
    """``[relay]``: the outbound queue, its retries, DNS and the smarthost."""

    enabled: bool = True
    retry_schedule: tuple[str, ...] = ("1m", "5m", "15m", "30m", "1h", "2h", "4h", "8h")
    max_queue_lifetime: int = 5 * 86400
    delay_warning: int = 0
    concurrency_per_domain: int = 10
    nameservers: tuple[str, ...] = ()
    dns_timeout: int = 10
    port: int = 25
    bind_address: str = ""
    smarthost: str = ""
    smarthost_username: str = ""
    smarthost_password: str = attrs.field(default="", repr=False)
    scan_interval: int = 60


@attrs.frozen
class WebConfig:
    listen: tuple[str, ...]
    session_lifetime: int
    idle_timeout: int
    admins: tuple[str, ...]
    listen_tls: tuple[str, ...] = ()


@attrs.frozen
class TLSConfig:
    """
    ``[tls]``: the default certificate and key, and per-host-name pairs
    (``sni``: host name -> (certificate, key)) for clients that send SNI.
    """

    certificate: str = ""
    key: str = ""
    sni: tuple[tuple[str, str, str], ...] = ()

    @property
    def enabled(self) -> bool:
        return bool(self.certificate)


@attrs.frozen
class SecurityConfig:
    """``[security]``: clear-text authentication policy, throttling, connection limits."""

    cleartext_auth: str = "loopback"
    auth_failure_min_ms: int = 400
    auth_delay_ms: int = 500
    auth_max_delay_ms: int = 8000
    auth_block_after: int = 10
    auth_account_block_after: int = 50
    auth_block_seconds: int = 900
    auth_window_seconds: int = 900
    max_connections: int = 10000
    max_connections_per_ip: int = 100
    preauth_timeout: int = 120


@attrs.frozen
class Config:
    """A validated configuration. ``source`` names where it came from."""

    hostname: str
    data_dir: str
    domains: tuple[str, ...]
    smtp: SMTPConfig
    submission: SubmissionConfig
    imap: IMAPConfig
    pop3: POP3Config
    storage: StorageConfig
    web: WebConfig = WebConfig((), 8 * 3600, 1800, ())
    source: str = "<embedded default>"
    auth: tuple[str, ...] = ()
    tls: TLSConfig = TLSConfig()
    security: SecurityConfig = SecurityConfig()
    relay: RelayConfig = RelayConfig()


_SECTIONS = {
    "smtp": SMTPConfig,
    "submission": SubmissionConfig,
    "imap": IMAPConfig,
    "pop3": POP3Config,
    "storage": StorageConfig,
    "web": WebConfig,
    "tls": TLSConfig,
    "security": SecurityConfig,
    "relay": RelayConfig,
}


def _type_name(t: type | tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", list: "a list of strings", bool: "true or false",
             dict: "a table"}
    if isinstance(t, tuple):
        return " or ".join(names[x] for x in t)
    return names[t]


def _where(section: str, key: str) -> str:
    return f"[{section}] {key}" if section else key


def _suggest(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    if close:
        return f"; did you mean {close[0]!r}?"
    return f"; known keys: {', '.join(sorted(choices))}"


def _check_value(source: str, section: str, key: str, spec: Key, value: Any) -> Any:
    where = f"{source}: {_where(section, key)}"
    if spec.type is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{where} = {value!r} is not valid: expected {_type_name(spec.type)}")
    if spec.type is list:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where} = {value!r} is not valid: expected a list of strings, "
                              'e.g. ["tcp:25"]')
        return tuple(value)
    if spec.type is str and not isinstance(value, str):
        raise ConfigError(f"{where} = {value!r} is not valid: expected {_type_name(spec.type)}")
    if spec.type is bool and not isinstance(value, bool):
        raise ConfigError(f"{where} = {value!r} is not valid: expected {_type_name(spec.type)}")
    if spec.type is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} = {value!r} is not valid: expected a table")
        return value
    if spec.choices is not None and value not in spec.choices:
        raise ConfigError(f"{where} = {value!r} is not valid: expected one of "
                          + ", ".join(repr(c) for c in spec.choices))
    if spec.minimum is not None and value < spec.minimum:
        raise ConfigError(f"{where} = {value!r} is too small: the minimum is {spec.minimum}")
    return value


def from_mapping(data: Mapping[str, Any], source: str, base_dir: str = ".") -> Config:
    """
    Build a :class:`Config` from parsed TOML, filling defaults.

    :param source: the file name, used in every error message.
    :param base_dir: relative ``data_dir`` values are taken from here (the
        directory of the config file).
    :raises ConfigError: an unknown key, a wrong type, a bad value.
    """
    top = SCHEMA[""]
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key in _SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: {key} must be a table ([{key}]), not {value!r}")
            continue
        if key not in top:
            raise ConfigError(
                f"{source}: unknown key {key!r}" + _suggest(key, list(top) + list(_SECTIONS))
            )
        values[key] = _check_value(source, "", key, top[key], value)
    sections: dict[str, Any] = {}
    for section, cls in _SECTIONS.items():
        given = data.get(section, {})
        schema = SCHEMA[section]
        fields = {}
        for key, value in given.items():
            if key not in schema:
                raise ConfigError(
                    f"{source}: unknown key {key!r} in [{section}]" + _suggest(key, list(schema))
                )
            fields[key] = _check_value(source, section, key, schema[key], value)
        for key, spec in schema.items():
            if key not in fields:
                default = spec.default
                fields[key] = tuple(default) if isinstance(default, list) else default
        if section == "tls":
            # Relative paths are taken from the configuration file's directory.
            def absolute(path: str) -> str:
                return os.path.join(base_dir, os.path.expanduser(path)) if path else ""

            fields["certificate"] = absolute(fields["certificate"])
            fields["key"] = absolute(fields["key"])
            fields["sni"] = tuple(
                (host, absolute(cert), absolute(key))
                for host, cert, key in _sni_pairs(source, fields["sni"])
            )
        sections[section] = cls(**fields)
    hostname = values.get("hostname", top["hostname"].default)
    if not hostname or any(c.isspace() for c in hostname):
        raise ConfigError(f"{source}: hostname = {hostname!r} is not a valid host name")
    data_dir = values.get("data_dir", top["data_dir"].default)
    if not data_dir:
        raise ConfigError(f"{source}: data_dir must not be empty")
    data_dir = os.path.abspath(os.path.join(base_dir, os.path.expanduser(data_dir)))
    domains = tuple(d.lower() for d in values.get("domains", ()))
    auth = tuple(values.get("auth", ()))
    tls = sections["tls"]
    if not tls.enabled:
        for section in ("submission", "imap", "pop3", "web"):
            if sections[section].listen_tls:
                raise ConfigError(
                    f"{source}: [{section}] listen_tls needs a certificate: set [tls] "
                    "certificate (and key), e.g. from `pymail tls selfsigned HOSTNAME`"
                )
        if tls.sni:
            raise ConfigError(f"{source}: [tls] sni needs a default [tls] certificate too")
    return Config(hostname=hostname, data_dir=data_dir, domains=domains, source=source,
                  auth=auth, **sections)


def _sni_pairs(source: str, value: dict[str, Any]) -> tuple[tuple[str, str, str], ...]:
    """``[tls.sni."host"] certificate = ..., key = ...`` as (host, certificate, key)."""
    pairs = []
    for host, pair in value.items():
        where = f"{source}: [tls.sni.{host!r}]"
        if not isinstance(pair, dict) or not isinstance(pair.get("certificate"), str):
            raise ConfigError(f"{where} must be a table with certificate = \"PATH\" "
                              "(and key = \"PATH\")")
        extra = set(pair) - {"certificate", "key"}
        if extra:
            raise ConfigError(f"{where}: unknown key {sorted(extra)[0]!r}; "
                              "known keys: certificate, key")
        key = pair.get("key", "")
        if not isinstance(key, str):
            raise ConfigError(f"{where} key = {key!r} is not valid: expected a string")
        pairs.append((host.lower().rstrip("."), pair["certificate"], key))
    return tuple(pairs)


def load(path: str) -> Config:
    """
    Read and validate a TOML configuration file.

    :raises ConfigError: the file is missing or unreadable, is not valid
        TOML (the message gives the line), or holds a bad value.
    """
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise ConfigError(f"{path}: configuration file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a configuration file") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the configuration file: {e.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ConfigError(f"{path}: line {line}: the file is not valid UTF-8") from None
    except tomllib.TOMLDecodeError as e:
        message = str(e)
        if "(at end of document)" in message:
            last = raw.rstrip(b"\n").count(b"\n") + 1
            message = message.replace(
                "(at end of document)", f"(at the end of the file, line {last})"
            )
        raise ConfigError(f"{path}: TOML syntax error: {message}") from None
    return from_mapping(data, path, os.path.dirname(os.path.abspath(path)))


def embedded_default(data_dir: str | None = None) -> Config:
    """The configuration ``twistd -n pymail`` runs with when given no file."""
    data = dict(EMBEDDED_DEFAULT)
    if data_dir is not None:
        data["data_dir"] = data_dir
    return from_mapping(data, "<embedded default>", os.getcwd())


def check_data_dir(config: Config) -> None:
    """
    Make sure the data directory exists (creating it) and can be written.

    :raises ConfigError: naming the directory and the reason.
    """
    path = config.data_dir
    where = f"{config.source}: data_dir = {path!r}"
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except FileExistsError:
        raise ConfigError(f"{where} exists and is not a directory") from None
    except OSError as e:
        raise ConfigError(f"{where} cannot be created: {e.strerror}") from None
    if not os.path.isdir(path):
        raise ConfigError(f"{where} is not a directory")
    probe = os.path.join(path, f".pymail-write-test.{os.getpid()}")
    try:
        with open(probe, "wb") as f:
            f.write(b"ok")
        os.unlink(probe)
    except OSError as e:
        raise ConfigError(f"{where} is not writable: {e.strerror}") from None


def check_endpoints(config: Config, reactor: Any) -> None:
    """
    Parse every listener's endpoint string (without listening).

    :raises ConfigError: naming the section, the string and the parse error.
    """
    from twisted.internet.endpoints import serverFromString

    for section in ("smtp", "submission", "imap", "pop3", "web"):
        for description in (*getattr(config, section).listen,
                            *getattr(getattr(config, section), "listen_tls", ())):
            try:
                serverFromString(reactor, description)
            except (ValueError, TypeError, KeyError) as e:
                raise ConfigError(
                    f"{config.source}: [{section}] listen: {description!r} is not a valid "
                    f"endpoint ({e or type(e).__name__}); expected a Twisted endpoint string "
                    "such as 'tcp:25', 'tcp:2525:interface=127.0.0.1' or 'unix:/run/pymail.sock'"
                ) from None


def check_storage_backend(config: Config, known: list[str]) -> None:
    """
    :raises ConfigError: the configured backend (or a per-domain one) is not
        one of ``known``, or ``[storage] domains``/``options`` are malformed.
    """
    from pymail.storage.plugins import parse_domains, parse_options

    if config.storage.backend not in known:
        raise ConfigError(
            f"{config.source}: [storage] backend = {config.storage.backend!r} is not a known "
            f"backend; available: {', '.join(sorted(known))}"
        )
    try:
        domains = parse_domains(config.storage.domains)
        parse_options(config.storage.options)
    except ValueError as e:
        raise ConfigError(f"{config.source}: [storage]: {e}") from None
    for domain, backend in domains.items():
        if backend not in known:
            raise ConfigError(
                f"{config.source}: [storage] domains: {domain}={backend!r} is not a known "
                f"backend; available: {', '.join(sorted(known))}"
            )
