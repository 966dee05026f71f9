"""Tests for pymail.tls: loading, clear errors, SNI selection, reload, TLS 1.2 minimum."""

from __future__ import annotations

from pathlib import Path

from OpenSSL import SSL
from twisted.trial.unittest import SynchronousTestCase

from pymail.config import from_mapping
from pymail.errors import ConfigError
from pymail.tls import ServerTLS, make_selfsigned


def handshake(server_tls: ServerTLS, server_name: bytes | None = None,
              max_version: int | None = None) -> SSL.Connection:
    """A client handshake against ``server_tls`` in memory; returns the client side."""
    server = server_tls.creator.serverConnectionForTLS(None)
    server.set_accept_state()
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    if max_version is not None:
        # Old protocol versions need OpenSSL's security level 0 on the client.
        context.set_cipher_list(b"DEFAULT:@SECLEVEL=0")
        context.set_max_proto_version(max_version)
    client = SSL.Connection(context, None)
    if server_name is not None:
        client.set_tlsext_host_name(server_name)
    client.set_connect_state()
    for _ in range(20):
        for a, b in ((client, server), (server, client)):
            try:
                a.do_handshake()
            except SSL.WantReadError:
                pass
            try:
                data = a.bio_read(65536)
            except SSL.WantReadError:
                data = b""
            if data:
                b.bio_write(data)
        if client.get_peer_certificate(as_cryptography=True) is not None \
                and server.get_finished() is not None:
            break
    return client


def subject(client: SSL.Connection) -> str:
    from cryptography.x509.oid import NameOID

    cert = client.get_peer_certificate(as_cryptography=True)
    assert cert is not None
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


class TLSTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = Path(self.mktemp())
        self.dir.mkdir()

    def pair(self, host: str) -> tuple[str, str]:
        cert, key = self.dir / f"{host}.crt", self.dir / f"{host}.key"
        make_selfsigned(host, str(cert), str(key))
        return str(cert), str(key)

    def test_missing_and_unreadable_files_are_clear_errors(self) -> None:
        """A missing certificate or a key that does not match names the key and the file."""
        cert, key = self.pair("a.example")
        _, other_key = self.pair("b.example")
        missing = r"\[tls\] certificate = '.*nope.pem': file not found"
        with self.assertRaisesRegex(ConfigError, missing):
            ServerTLS(str(self.dir / "nope.pem"), key)
        with self.assertRaisesRegex(ConfigError, r"\[tls\] key = .*b.example.key.* not .*for that"):
            ServerTLS(cert, other_key)
        (self.dir / "junk.pem").write_text("not a certificate")
        with self.assertRaisesRegex(ConfigError, "is not a PEM certificate"):
            ServerTLS(str(self.dir / "junk.pem"), key)

    def test_sni_picks_the_pair_for_the_name(self) -> None:
        """A client naming an SNI host gets that certificate; others get the default."""
        cert, key = self.pair("mail.example.org")
        other_cert, other_key = self.pair("mail.example.net")
        tls = ServerTLS(cert, key, sni=(("mail.example.net", other_cert, other_key),))
        self.assertEqual(subject(handshake(tls, b"mail.example.net")), "mail.example.net")
        self.assertEqual(subject(handshake(tls, b"MAIL.example.NET")), "mail.example.net")
        self.assertEqual(subject(handshake(tls, b"unknown.example")), "mail.example.org")
        self.assertEqual(subject(handshake(tls)), "mail.example.org")

    def test_reload_takes_new_files_and_keeps_old_on_error(self) -> None:
        """reload() serves the new certificate; broken new files keep the old one."""
        cert, key = self.pair("old.example")
        tls = ServerTLS(cert, key)
        make_selfsigned("new.example", cert, key)
        self.assertTrue(tls.reload())
        self.assertEqual(subject(handshake(tls)), "new.example")
        Path(key).write_text("garbage")
        self.assertFalse(tls.reload())
        self.assertEqual(subject(handshake(tls)), "new.example")

    def test_tls_1_1_is_refused(self) -> None:
        """A client limited to TLS 1.1 cannot complete a handshake."""
        cert, key = self.pair("a.example")
        with self.assertRaisesRegex(SSL.Error, "unsupported protocol"):
            handshake(ServerTLS(cert, key), max_version=SSL.TLS1_1_VERSION)

    def test_config_requires_certificate_for_listen_tls(self) -> None:
        """listen_tls without [tls] certificate is a configuration error naming the fix."""
        with self.assertRaisesRegex(ConfigError, r"\[pop3\] listen_tls needs a certificate"):
            from_mapping({"pop3": {"listen_tls": ["tcp:995"]}}, "t.toml")

    def test_config_sni_tables_and_relative_paths(self) -> None:
        """[tls.sni."host"] tables become (host, certificate, key), paths from the config's dir."""
        config = from_mapping(
            {"tls": {"certificate": "c.pem", "sni": {"Mail.Example.NET": {
                "certificate": "/etc/n.pem", "key": "n.key"}}}},
            "t.toml", base_dir="/etc/pymail",
        )
        self.assertEqual(config.tls.certificate, "/etc/pymail/c.pem")
        self.assertEqual(config.tls.sni, (("mail.example.net", "/etc/n.pem", "/etc/pymail/n.key"),))
        with self.assertRaisesRegex(ConfigError, "unknown key 'cert'"):
            from_mapping({"tls": {"certificate": "c.pem", "sni": {"h": {"certificate": "x",
                                                                       "cert": "y"}}}}, "t.toml")
        with self.assertRaisesRegex(ConfigError, "cleartext_auth = 'never' is not valid"):
            from_mapping({"security": {"cleartext_auth": "never"}}, "t.toml")


class CommandTests(SynchronousTestCase):
    def test_selfsigned_then_check_config(self) -> None:
        """`pymail tls selfsigned` writes a usable pair; check-config loads it, names a bad key."""
        import contextlib
        import io

        from pymail.cli import main

        root = Path(self.mktemp()).absolute()
        root.mkdir()
        cert, key = root / "c.pem", root / "k.pem"
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            self.assertEqual(main(["tls", "selfsigned", "mx.example", "--cert", str(cert),
                                   "--key", str(key)]), 0)
        self.assertEqual(key.stat().st_mode & 0o777, 0o600)
        self.assertIn(f'certificate = "{cert}"', out.getvalue())
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            self.assertEqual(main(["tls", "selfsigned", "mx.example", "--cert", str(cert),
                                   "--key", str(key)]), 1)
        self.assertIn("exists; use --force", err.getvalue())
        config = root / "p.toml"
        config.write_text(f'data_dir = "{root}/data"\n[pop3]\nlisten_tls = ["tcp:995"]\n'
                          f'[tls]\ncertificate = "{cert}"\nkey = "{key}"\n')
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            self.assertEqual(main(["check-config", str(config)]), 0)
        self.assertIn(f"TLS: {cert}", out.getvalue())
        key.write_text("not a key")
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            self.assertEqual(main(["check-config", str(config)]), 1)
        self.assertIn("[tls] key = ", err.getvalue())
