"""Tests for make_relay and the service: config errors name the key; the relay runs as a child."""

from __future__ import annotations

from pathlib import Path

import pytest

from pymail.config import from_mapping
from pymail.errors import ConfigError
from pymail.relay.runner import QueueRunner, make_relay
from pymail.smtp import replies as R
from pymail.smtp.replies import ReplyError
from pymail.storage.memory import MemoryStoreFactory
from pymail.testing import MemoryDirectory, ThreadlessReactor


def config(tmp_path: Path, **relay: object) -> object:
    return from_mapping({"data_dir": str(tmp_path), "domains": ["example.org"],
                         "relay": relay}, "test.toml")


def directory() -> MemoryDirectory:
    return MemoryDirectory(domains={"example.org"}, users={"alice@example.org"})


@pytest.mark.parametrize(("relay", "message"), [
    ({"retry_schedule": ["soon"]}, "[relay] retry_schedule: 'soon' is not a duration"),
    ({"retry_schedule": []}, "[relay] retry_schedule must not be empty"),
    ({"nameservers": ["ns.example"]}, "[relay] nameservers: 'ns.example' is not a nameserver"),
    ({"smarthost": "smtp.example.net:x"}, "[relay] smarthost = 'smtp.example.net:x'"),
])
def test_bad_relay_values(tmp_path: Path, relay: dict[str, object], message: str) -> None:
    """A bad [relay] value is a ConfigError naming the file, the key and the value."""
    with pytest.raises(ConfigError) as info:
        make_relay(config(tmp_path, **relay), directory(), MemoryStoreFactory(),
                   ThreadlessReactor())
    assert str(info.value).startswith("test.toml: " + message)


def test_relay_wired(tmp_path: Path) -> None:
    """The policy queues remote targets through the runner, which notifies through the policy."""
    delivery, runner = make_relay(config(tmp_path, smarthost="smtp.example.net:587"),
                                  directory(), MemoryStoreFactory(), ThreadlessReactor())
    assert isinstance(runner, QueueRunner)
    assert delivery.queue is runner and runner.inject == delivery.inject
    assert runner.smarthost == ("smtp.example.net", 587)
    assert runner.client.require_tls
    assert delivery.check_recipient("<bob@remote.example>",
                                    authenticated_as="alice@example.org") == [
        "bob@remote.example"]


def test_relay_disabled(tmp_path: Path) -> None:
    """With enabled = false, remote recipients are refused with the outbound-relay reply."""
    delivery, _ = make_relay(config(tmp_path, enabled=False), directory(),
                             MemoryStoreFactory(), ThreadlessReactor())
    with pytest.raises(ReplyError) as info:
        delivery.check_recipient("<bob@remote.example>", authenticated_as="alice@example.org")
    assert info.value.reply == R.OUTBOUND_RELAY_DISABLED.format(address="bob@remote.example")


def test_service_has_relay(tmp_path: Path) -> None:
    """make_service adds the queue runner as a named child service."""
    from twisted.internet import reactor

    from pymail.service import make_service

    cfg = from_mapping({"data_dir": str(tmp_path), "smtp": {"listen": []},
                        "submission": {"listen": []}, "imap": {"listen": []},
                        "pop3": {"listen": []}, "web": {"listen": []}}, "test.toml")
    service = make_service(cfg, reactor)
    assert isinstance(service.getServiceNamed("relay"), QueueRunner)
