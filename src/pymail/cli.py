"""
The ``pymail`` admin command: accounts, aliases, domains, configuration check.

It works on the data directory of the configuration given with
``--config`` (or of the embedded default, ``./pymail-data``), and is safe to
run while the server runs: the server sees the changes without a restart.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Sequence

from pymail.config import Config, check_endpoints, check_storage_backend, embedded_default, load
from pymail.directory.files import FileDirectory
from pymail.directory.passwords import hash_password, scram_credential
from pymail.errors import ConfigError, DirectoryError

EXAMPLES = """\
examples:
  pymail user add alice@localhost                 (asks for the password)
  echo 's3cret' | pymail --config /etc/pymail/pymail.toml user add bob@example.org
  pymail domain add example.org
  pymail alias add sales@example.org alice@example.org bob@example.org
  pymail check-config /etc/pymail/pymail.toml
  pymail tls selfsigned mail.example.org           (a test certificate)
"""


class CommandError(Exception):
    """Ends the command with a message and exit status 1."""


def _config(args: argparse.Namespace) -> Config:
    return load(args.config) if args.config else embedded_default()


def _directory(args: argparse.Namespace) -> FileDirectory:
    config = _config(args)
    directory = FileDirectory(config.data_dir)
    if config.domains:
        directory.ensure_domains(config.domains)
    return directory


def read_password(prompt_for: str) -> str:
    """From a prompt (asked twice) on a terminal, else the first line of stdin."""
    if sys.stdin.isatty():
        first = getpass.getpass(f"Password for {prompt_for}: ")
        again = getpass.getpass("Again: ")
        if first != again:
            raise CommandError("the two passwords differ; nothing changed")
        password = first
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise CommandError("the password is empty; nothing changed")
    if any(c in password for c in "\0\r\n"):
        raise CommandError("the password contains NUL, CR or LF; nothing changed")
    return password


def cmd_user(args: argparse.Namespace) -> None:
    directory = _directory(args)
    if args.action == "list":
        for user in directory.users():
            print(user.address + ("  (disabled)" if user.disabled else ""))
        return
    if args.action == "add":
        password = read_password(args.address)
        address = directory.add_user(
            args.address, hash_password(password), scram_credential(password))
        print(f"added account {address}")
    elif args.action == "passwd":
        password = read_password(args.address)
        directory.set_password(args.address, hash_password(password), scram_credential(password))
        print(f"changed the password of {args.address.lower()}")
    elif args.action == "del":
        directory.delete_user(args.address)
        print(f"deleted account {args.address.lower()}; its mail stays in "
              f"{os.path.join(directory.data_dir, 'mail')} until removed by hand")
    elif args.action in ("disable", "enable"):
        directory.set_disabled(args.address, args.action == "disable")
        print(f"{args.action}d account {args.address.lower()}")


def cmd_alias(args: argparse.Namespace) -> None:
    directory = _directory(args)
    if args.action == "list":
        for alias, targets in sorted(directory.aliases().items()):
            print(f"{alias}: {', '.join(targets)}")
    elif args.action == "add":
        alias = directory.add_alias(args.alias, args.targets)
        print(f"{alias} -> {', '.join(directory.aliases()[alias])}")
    elif args.action == "del":
        directory.delete_alias(args.alias)
        print(f"deleted alias {args.alias.lower()}")


def cmd_domain(args: argparse.Namespace) -> None:
    directory = _directory(args)
    if args.action == "list":
        for domain in directory.domains():
            print(domain)
    elif args.action == "add":
        print(f"added domain {directory.add_domain(args.domain)}")
    elif args.action == "del":
        directory.delete_domain(args.domain)
        print(f"deleted domain {args.domain.lower()}")


def cmd_check_config(args: argparse.Namespace) -> None:
    from twisted.internet import reactor

    from pymail.service import storage_backends

    config = load(args.file)
    check_endpoints(config, reactor)
    check_storage_backend(config, list(storage_backends()))
    parent = config.data_dir
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{config.source}: data_dir = {config.data_dir!r} cannot be created "
                          f"or written ({parent} is not a writable directory)")
    from pymail.tls import ServerTLS

    tls = ServerTLS.from_config(config)  # loads the files: a bad pair is an error here
    print(f"{args.file}: OK")
    for section in ("smtp", "submission", "imap", "pop3"):
        listen = getattr(config, section).listen
        print(f"  [{section}] {', '.join(listen) if listen else 'off'}")
        implicit = getattr(getattr(config, section), "listen_tls", ())
        if implicit:
            print(f"  [{section}] implicit TLS: {', '.join(implicit)}")
    print(f"  data_dir {config.data_dir}; storage {config.storage.backend}")
    if tls is None:
        print("  TLS off (no [tls] certificate): no STARTTLS/STLS")
    else:
        names = "".join(f", {host}" for host, _, _ in config.tls.sni)
        print(f"  TLS: {config.tls.certificate}{' (SNI: ' + names[2:] + ')' if names else ''}")


def cmd_tls(args: argparse.Namespace) -> None:
    from pymail.tls import load_options, make_selfsigned

    host = args.hostname
    cert = args.cert or f"{host}.crt"
    key = args.key or f"{host}.key"
    for path in (cert, key):
        if os.path.exists(path) and not args.force:
            raise CommandError(f"{path} exists; use --force to replace it")
    make_selfsigned(host, cert, key, days=args.days)
    load_options(cert, key)  # proves the pair loads as pymail will load it
    print(f"wrote a self-signed certificate for {host} (valid {args.days} days):")
    print(f"  certificate {os.path.abspath(cert)}")
    print(f"  key         {os.path.abspath(key)} (mode 0600)")
    print("add to the configuration:")
    print(f'  [tls]\n  certificate = "{os.path.abspath(cert)}"\n  key = "{os.path.abspath(key)}"')


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pymail",
        description="Manage a pymail server: accounts, aliases, domains, configuration.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", "-c", metavar="FILE",
                        help="configuration file (default: the embedded default, "
                             "data in ./pymail-data)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help: str, example: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help, epilog=f"example:\n  {example}",
                              formatter_class=argparse.RawDescriptionHelpFormatter)

    user = add("user", "manage accounts", "pymail user add alice@example.org")
    uactions = user.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, text in [
        ("add", "add an account (password from a prompt, or the first line of stdin)"),
        ("passwd", "change an account's password (prompt or stdin)"),
        ("del", "delete an account (its mail is kept on disk)"),
        ("disable", "lock an account out of every protocol"),
        ("enable", "let a disabled account log in again"),
    ]:
        p = uactions.add_parser(action, help=text, description=text,
                                epilog=f"example:\n  pymail user {action} alice@example.org",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("address", metavar="ADDRESS")
    uactions.add_parser("list", help="list accounts", description="list accounts",
                        epilog="example:\n  pymail user list",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    user.set_defaults(func=cmd_user)

    alias = add("alias", "manage aliases",
                "pymail alias add sales@example.org alice@example.org")
    aactions = alias.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = aactions.add_parser("add", help="add an alias, or targets to an existing one",
                            epilog="example:\n  pymail alias add info@example.org "
                                   "alice@example.org bob@example.org",
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("alias", metavar="ALIAS")
    p.add_argument("targets", metavar="TARGET", nargs="+")
    p = aactions.add_parser("del", help="delete an alias",
                            epilog="example:\n  pymail alias del info@example.org",
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("alias", metavar="ALIAS")
    aactions.add_parser("list", help="list aliases", epilog="example:\n  pymail alias list",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    alias.set_defaults(func=cmd_alias)

    domain = add("domain", "manage local domains", "pymail domain add example.org")
    dactions = domain.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, text in [("add", "add a local domain"),
                         ("del", "delete a local domain (it must have no accounts)")]:
        p = dactions.add_parser(action, help=text, description=text,
                                epilog=f"example:\n  pymail domain {action} example.org",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("domain", metavar="DOMAIN")
    dactions.add_parser("list", help="list local domains",
                        epilog="example:\n  pymail domain list",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    domain.set_defaults(func=cmd_domain)

    check = add("check-config", "check a configuration file and say what it would do",
                "pymail check-config /etc/pymail/pymail.toml")
    check.add_argument("file", metavar="FILE")
    check.set_defaults(func=cmd_check_config)

    tls = add("tls", "TLS certificates", "pymail tls selfsigned mail.example.org")
    tactions = tls.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = tactions.add_parser(
        "selfsigned",
        help="write a self-signed certificate and key for testing",
        description="Write a self-signed certificate (EC P-256, for HOSTNAME, 127.0.0.1 "
                    "and ::1) and its key, for testing TLS; clients must be told to trust it.",
        epilog="example:\n  pymail tls selfsigned mail.example.org --cert /etc/pymail/cert.pem "
               "--key /etc/pymail/key.pem",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("hostname", metavar="HOSTNAME")
    p.add_argument("--cert", metavar="PATH", help="certificate file (default HOSTNAME.crt)")
    p.add_argument("--key", metavar="PATH", help="key file (default HOSTNAME.key)")
    p.add_argument("--days", type=int, default=365, help="validity in days (default 365)")
    p.add_argument("--force", action="store_true", help="replace existing files")
    tls.set_defaults(func=cmd_tls)

    from pymail.relay.admin import add_queue_command

    add_queue_command(add, _config)

    from pymail.storage.migrate import add_migrate_command

    add_migrate_command(add, _config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (ConfigError, DirectoryError, CommandError) as e:
        print(f"pymail: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("pymail: interrupted; nothing changed", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
