"""
TLS for every listener: certificate loading, the server policy (TLS 1.2 at
least, the OpenSSL defaults Twisted picks for ciphers), reload without
dropping connections, and self-signed certificates for testing.

Protocols use one object, :class:`ServerTLS`:

- ``server_tls.creator`` is an ``IOpenSSLServerConnectionCreator`` for
  ``transport.startTLS(...)`` (STARTTLS, STLS);
- ``server_tls.wrap(factory)`` wraps a protocol factory for implicit TLS
  (ports 465, 993, 995);
- ``server_tls.reload()`` re-reads the files; new handshakes use the new
  certificate, established connections keep theirs.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from typing import Any

from OpenSSL import SSL
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from zope.interface import implementer

from pymail.errors import ConfigError

log = Logger()


def _read(path: str, what: str, source: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise ConfigError(f"{source}: [tls] {what} = {path!r}: file not found") from None
    except OSError as e:
        raise ConfigError(f"{source}: [tls] {what} = {path!r}: cannot read: {e.strerror}") from None


#: TLS 1.2 suites: forward secrecy and AEAD only (TLS 1.3 suites are all
#: of that kind and keep OpenSSL's defaults).
CIPHERS = b"ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:!aNULL:!SHA1"


class ServerOptions:
    """One certificate, key and chain as an OpenSSL server context."""

    def __init__(self, context: SSL.Context) -> None:
        self._context = context

    def getContext(self) -> SSL.Context:
        return self._context


def load_options(certificate: str, key: str, source: str = "<tls>") -> ServerOptions:
    """
    Build the server's TLS context from PEM files: TLS 1.2 at least,
    forward-secret AEAD ciphers, no compression, no renegotiation.

    :param certificate: the certificate, followed by its chain.
    :param key: the private key (may be the same file as ``certificate``).
    :raises ConfigError: a file is missing or unreadable, not PEM, or the
        key does not match the certificate.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    cert_pem = _read(certificate, "certificate", source)
    key_pem = _read(key, "key", source) if key else cert_pem
    try:
        chain = x509.load_pem_x509_certificates(cert_pem)
    except Exception as e:
        raise ConfigError(
            f"{source}: [tls] certificate = {certificate!r} is not a PEM certificate ({e})"
        ) from None
    try:
        private_key = load_pem_private_key(key_pem, password=None)
    except Exception as e:
        raise ConfigError(
            f"{source}: [tls] key = {key!r} is not a PEM private key for that certificate "
            f"(an unencrypted PEM key is needed: {e})"
        ) from None
    context = SSL.Context(SSL.TLS_SERVER_METHOD)
    context.set_min_proto_version(SSL.TLS1_2_VERSION)
    context.set_options(
        SSL.OP_NO_COMPRESSION | SSL.OP_CIPHER_SERVER_PREFERENCE | SSL.OP_NO_RENEGOTIATION
    )
    context.set_cipher_list(CIPHERS)
    context.set_mode(SSL.MODE_RELEASE_BUFFERS)
    try:
        context.use_certificate(chain[0])
        for extra in chain[1:]:
            context.add_extra_chain_cert(extra)
        context.use_privatekey(private_key)  # type: ignore[arg-type]
        context.check_privatekey()
    except (SSL.Error, TypeError, ValueError) as e:
        raise ConfigError(
            f"{source}: [tls] key = {key!r} is not a PEM private key for that certificate ({e})"
        ) from None
    return ServerOptions(context)


@implementer(IOpenSSLServerConnectionCreator)
class _ReloadableCreator:
    def __init__(self, owner: ServerTLS) -> None:
        self._owner = owner

    def serverConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        return SSL.Connection(self._owner.context(), None)


class ServerTLS:
    """
    The server's certificate and key, and per-host-name pairs chosen by SNI;
    reloadable.

    :param sni: (host name, certificate, key) triples; a client that sends
        one of these names in its TLS hello gets that pair, any other client
        the default pair.
    """

    def __init__(
        self,
        certificate: str,
        key: str,
        source: str = "<tls>",
        sni: tuple[tuple[str, str, str], ...] = (),
    ) -> None:
        self.certificate = certificate
        self.key = key
        self.source = source
        self.sni = sni
        self.options, self._by_name = self._load()
        self.creator: IOpenSSLServerConnectionCreator = _ReloadableCreator(self)

    @classmethod
    def from_config(cls, config: Any) -> ServerTLS | None:
        """
        The TLS of a :class:`pymail.config.Config`, or ``None`` when its
        ``[tls]`` has no certificate.

        :raises ConfigError: a file is missing, unreadable or not a matching
            PEM certificate and key.
        """
        tls = config.tls
        if not tls.enabled:
            return None
        return cls(tls.certificate, tls.key, config.source, tls.sni)

    def _load(self) -> tuple[ServerOptions, dict[str, ServerOptions]]:
        default = load_options(self.certificate, self.key, self.source)
        by_name = {
            host: load_options(cert, key, f"{self.source}: [tls.sni.{host!r}]")
            for host, cert, key in self.sni
        }
        if by_name:
            default.getContext().set_tlsext_servername_callback(self._choose)
        return default, by_name

    def _choose(self, connection: SSL.Connection) -> None:
        # RFC 6066 section 3: the client's server_name picks the certificate;
        # an unknown name gets the default one (no alert).
        name = connection.get_servername()
        if name is None:
            return
        options = self._by_name.get(name.decode("ascii", "replace").lower().rstrip("."))
        if options is not None:
            connection.set_context(options.getContext())

    def context(self) -> SSL.Context:
        """The OpenSSL context new connections start with."""
        return self.options.getContext()

    def reload(self) -> bool:
        """
        Re-read the files.  On an error the old certificates stay in use and
        the error is logged; returns whether the new files were taken.
        Established connections keep the certificate they started with.
        """
        try:
            self.options, self._by_name = self._load()
        except ConfigError as e:
            log.error("TLS reload failed, keeping the current certificate: {error}", error=str(e))
            return False
        log.info("TLS certificate reloaded from {path}", path=self.certificate)
        return True

    def wrap(self, factory: Any) -> TLSMemoryBIOFactory:
        """A factory for implicit TLS: the handshake first, then ``factory``'s protocol."""
        return TLSMemoryBIOFactory(self.creator, False, factory)


def make_selfsigned(hostname: str, cert_path: str, key_path: str, days: int = 365) -> None:
    """
    Write a self-signed certificate for ``hostname`` (and loopback
    addresses) with a new EC P-256 key, for testing.  The key file is
    created mode 0600.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.UTC)
    alt: list[x509.GeneralName] = [x509.DNSName(hostname)]
    for ip in ("127.0.0.1", "::1"):
        alt.append(x509.IPAddress(ipaddress.ip_address(ip)))
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key_bytes)
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
