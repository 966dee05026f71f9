"""[web] listen_tls: HTTPS with the shared [tls] certificate."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from pymail.config import from_mapping
from pymail.errors import ConfigError


class ListenTLSConfigTests(SynchronousTestCase):
    def test_listen_tls_needs_a_certificate(self) -> None:
        """[web] listen_tls without a [tls] certificate stops start-up with a clear message."""
        with self.assertRaises(ConfigError) as caught:
            from_mapping({"web": {"listen_tls": ["tcp:8443"]}}, "test.toml")
        self.assertIn("[web] listen_tls needs a certificate", str(caught.exception))

    def test_listen_tls_is_read(self) -> None:
        """The endpoints of [web] listen_tls are kept beside the plain ones."""
        config = from_mapping({"web": {"listen": ["tcp:8080"], "listen_tls": ["tcp:8443"]},
                               "tls": {"certificate": "/etc/ssl/mail.pem"}}, "test.toml")
        self.assertEqual((config.web.listen, config.web.listen_tls),
                         (("tcp:8080",), ("tcp:8443",)))
