"""Configuration loading: defaults, the embedded default, and one clear message per mistake."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from pymail.config import (
    SCHEMA,
    check_data_dir,
    check_endpoints,
    embedded_default,
    from_mapping,
    load,
)
from pymail.errors import ConfigError


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "pymail.toml"
    path.write_text(text)
    return str(path)


def test_minimal_file_gets_production_defaults(tmp_path: Path) -> None:
    """A file with only a hostname listens on the standard ports."""
    config = load(write(tmp_path, 'hostname = "mail.example.org"\n'))
    assert config.hostname == "mail.example.org"
    assert config.smtp.listen == ("tcp:25",)
    assert config.submission.listen == ("tcp:587",)
    assert config.imap.listen == ("tcp:143",)
    assert config.pop3.listen == ("tcp:110",)
    assert config.storage.backend == "maildir"
    assert config.data_dir == "/var/lib/pymail"


def test_full_example_file_loads() -> None:
    """examples/pymail.toml, the documented example, is valid."""
    example = Path(__file__).parents[2] / "examples" / "pymail.toml"
    config = load(str(example))
    assert config.hostname == "mail.example.org"


def test_relative_data_dir_is_relative_to_the_file(tmp_path: Path) -> None:
    """data_dir = "data" means the directory beside the config file."""
    config = load(write(tmp_path, 'data_dir = "data"\n'))
    assert config.data_dir == str(tmp_path / "data")


def test_empty_listen_turns_service_off(tmp_path: Path) -> None:
    """listen = [] disables a service."""
    config = load(write(tmp_path, "[pop3]\nlisten = []\n"))
    assert config.pop3.listen == ()


def test_embedded_default_is_loopback_and_unprivileged() -> None:
    """The embedded default listens on 127.0.0.1 high ports only, domain localhost."""
    config = embedded_default()
    for section in ("smtp", "submission", "imap", "pop3"):
        for listen in getattr(config, section).listen:
            assert "interface=127.0.0.1" in listen
            assert int(listen.split(":")[1]) > 1024
    assert config.domains == ("localhost",)
    assert config.data_dir == os.path.abspath("pymail-data")


def test_missing_file(tmp_path: Path) -> None:
    """A missing file is named."""
    path = str(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match=re.escape(f"{path}: configuration file not found")):
        load(path)


def test_toml_syntax_error_gives_line(tmp_path: Path) -> None:
    """A TOML syntax error names the file and the line."""
    path = write(tmp_path, 'hostname = "a"\n[smtp]\nlisten == ["tcp:25"]\n[imap]\n')
    with pytest.raises(ConfigError) as e:
        load(path)
    assert str(e.value).startswith(f"{path}: TOML syntax error:")
    assert "line 3" in str(e.value)


def test_toml_error_at_end_of_file_gives_line(tmp_path: Path) -> None:
    """An unclosed array at the end of the file still names a line."""
    path = write(tmp_path, 'hostname = "a"\n[smtp]\nlisten = ["tcp:25"\n')
    with pytest.raises(ConfigError, match=r"TOML syntax error: Unclosed array \(at the end of "
                                          r"the file, line 3\)"):
        load(path)


def test_unknown_key_suggests_the_intended_one(tmp_path: Path) -> None:
    """A misspelt key is named with the likely intended key."""
    path = write(tmp_path, '[smtp]\nlisten = []\nmax_mesage_size = 10\n')
    with pytest.raises(ConfigError) as e:
        load(path)
    assert str(e.value) == (
        f"{path}: unknown key 'max_mesage_size' in [smtp]; did you mean 'max_message_size'?"
    )


def test_unknown_top_level_key(tmp_path: Path) -> None:
    """A misspelt top-level key is named with a suggestion."""
    path = write(tmp_path, 'hostnme = "x"\n')
    with pytest.raises(ConfigError, match="unknown key 'hostnme'; did you mean 'hostname'"):
        load(path)


def test_wrong_type(tmp_path: Path) -> None:
    """A value of the wrong type names the key, the value and the expected type."""
    path = write(tmp_path, '[smtp]\nmax_message_size = "big"\n')
    with pytest.raises(ConfigError) as e:
        load(path)
    assert str(e.value) == (
        f"{path}: [smtp] max_message_size = 'big' is not valid: expected an integer"
    )


def test_listen_must_be_a_list(tmp_path: Path) -> None:
    """listen = "tcp:25" (a string, not a list) is refused with an example."""
    path = write(tmp_path, '[imap]\nlisten = "tcp:143"\n')
    with pytest.raises(ConfigError, match=r'\[imap\] listen = .* expected a list of strings'):
        load(path)


def test_value_below_minimum(tmp_path: Path) -> None:
    """A number below the key's minimum says what the minimum is."""
    path = write(tmp_path, "[smtp]\nmax_recipients = 0\n")
    with pytest.raises(ConfigError, match=r"\[smtp\] max_recipients = 0 is too small: the "
                                          r"minimum is 1"):
        load(path)


def test_bad_endpoint_string(tmp_path: Path) -> None:
    """An endpoint string that does not parse is named with examples of good ones."""
    from twisted.internet import reactor

    config = load(write(tmp_path, '[smtp]\nlisten = ["tcp:notaport"]\n'))
    with pytest.raises(ConfigError) as e:
        check_endpoints(config, reactor)
    assert "[smtp] listen: 'tcp:notaport' is not a valid endpoint" in str(e.value)
    assert "'tcp:25'" in str(e.value)


def test_unknown_endpoint_type(tmp_path: Path) -> None:
    """An unknown endpoint type is a config error, not a traceback."""
    from twisted.internet import reactor

    config = load(write(tmp_path, '[pop3]\nlisten = ["carrier-pigeon:110"]\n'))
    with pytest.raises(ConfigError, match=r"\[pop3\] listen: 'carrier-pigeon:110'"):
        check_endpoints(config, reactor)


def test_data_dir_not_writable(tmp_path: Path) -> None:
    """A data directory that cannot be created names the directory and the reason."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    config = from_mapping({"data_dir": str(blocker / "sub")}, "t.toml")
    with pytest.raises(ConfigError, match=r"t.toml: data_dir = '.*/file/sub' cannot be created"):
        check_data_dir(config)


def test_data_dir_is_a_file(tmp_path: Path) -> None:
    """A data_dir that is a file is refused."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    config = from_mapping({"data_dir": str(blocker)}, "t.toml")
    with pytest.raises(ConfigError, match="exists and is not a directory"):
        check_data_dir(config)


def test_every_key_is_documented() -> None:
    """docs/configuration.md documents every key of the schema."""
    doc = (Path(__file__).parents[2] / "docs" / "configuration.md").read_text()
    for section, keys in SCHEMA.items():
        for key in keys:
            heading = f"`{key}`" if not section else f"`[{section}] {key}`"
            assert heading in doc, f"{heading} is not documented in docs/configuration.md"
