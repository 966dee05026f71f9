"""The fail2ban filter in examples/fail2ban matches the failure lines pymail really writes."""

from __future__ import annotations

import io
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from twisted.cred.credentials import UsernamePassword
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, globalLogPublisher, textFileLogObserver

from harness import tool
from pymail.auth.throttle import LoginThrottle
from pymail.interfaces import IAccount
from pymail.logobserver import TurnFlushingLogObserver
from pymail.testing import memory_portal

FILTER = Path(__file__).parents[2] / "examples" / "fail2ban" / "pymail.conf"


def _pymail_observer(out: io.StringIO) -> Any:
    # What `twistd pymail` logs through (outside a reactor turn it writes at once).
    return TurnFlushingLogObserver(out, Clock(), in_reactor_thread=lambda: False)


@pytest.mark.parametrize("make_observer", [_pymail_observer, textFileLogObserver],
                         ids=["pymail-observer", "twistd-text-observer"])
def test_filter_matches_failure_lines_with_the_client_address(
    tmp_path: Path, make_observer: Callable[[io.StringIO], ILogObserver]
) -> None:
    """fail2ban-regex finds every failure line (IPv4, IPv6, hostile user names) and the host."""
    out = io.StringIO()
    observer = make_observer(out)
    globalLogPublisher.addObserver(observer)
    try:
        clock = Clock()
        portal, _, _ = memory_portal({"alice@example.org": "pw"})
        throttle = LoginThrottle(clock, failure_min=0.0, delay=0.0, block_after=2)
        for peer, user in [("203.0.113.9", b"alice@example.org"), ("2001:db8::7", b"x y\r\nz"),
                           ("203.0.113.9", b"alice@example.org")]:
            d = throttle.login(portal, UsernamePassword(user, b"wrong"), IAccount, peer=peer,
                               service="imap")
            d.addErrback(lambda f: None)
    finally:
        globalLogPublisher.removeObserver(observer)
    log = tmp_path / "pymail.log"
    log.write_text(out.getvalue())
    result = subprocess.run([tool("fail2ban-regex"), str(log), str(FILTER)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 matched" in result.stdout, result.stdout
    hosts = subprocess.run([tool("fail2ban-regex"), "--print-all-matched", str(log), str(FILTER)],
                           capture_output=True, text=True, timeout=60).stdout
    assert "rhost=2001:db8::7" in hosts and "rhost=203.0.113.9" in hosts
