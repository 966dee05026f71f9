"""twistd pymail start-up: the embedded default, and one clear line for each bad configuration."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import pytest
from harness import PymailProcess, free_port, run_twistd, tool


def assert_clean_failure(result: subprocess.CompletedProcess[str], expected: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback" not in output, output
    assert expected in result.stderr, output
    assert result.stderr.strip().count("\n") == 0, f"more than one line:\n{result.stderr}"


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "pymail.toml"
    path.write_text(f'data_dir = "{tmp_path / "data"}"\n' + text)
    return str(path)


def test_missing_config_file(tmp_path: Path) -> None:
    """A missing file: named, exit non-zero, no traceback."""
    result = run_twistd(["pymail", "--config", str(tmp_path / "nope.toml")], tmp_path)
    assert_clean_failure(result, f"{tmp_path / 'nope.toml'}: configuration file not found")


def test_toml_syntax_error(tmp_path: Path) -> None:
    """A TOML syntax error: the file and the line."""
    path = write(tmp_path, '[smtp]\nlisten = ["tcp:25"\n[imap]\n')
    result = run_twistd(["pymail", "--config", path], tmp_path)
    assert_clean_failure(result, f"{path}: TOML syntax error:")
    assert "(at line 4, column 1)" in result.stderr  # where the parser found the problem


def test_unknown_key(tmp_path: Path) -> None:
    """An unknown key: named, with the likely intended key."""
    path = write(tmp_path, "[imap]\nidle_timout = 5\n")
    result = run_twistd(["pymail", "--config", path], tmp_path)
    assert_clean_failure(
        result, "unknown key 'idle_timout' in [imap]; did you mean 'idle_timeout'?"
    )


def test_wrong_type(tmp_path: Path) -> None:
    """A wrong type: the key, the value and what is accepted."""
    path = write(tmp_path, "[pop3]\ntimeout = true\n")
    result = run_twistd(["pymail", "--config", path], tmp_path)
    assert_clean_failure(result, "[pop3] timeout = True is not valid: expected an integer")


def test_data_dir_cannot_be_created(tmp_path: Path) -> None:
    """A data directory that cannot be created: the directory and why."""
    (tmp_path / "afile").write_text("x")
    path = tmp_path / "pymail.toml"
    path.write_text(f'data_dir = "{tmp_path / "afile" / "data"}"\n')
    result = run_twistd(["pymail", "--config", str(path)], tmp_path)
    assert_clean_failure(result, "cannot be created")
    assert str(tmp_path / "afile" / "data") in result.stderr


def test_data_dir_not_writable(tmp_path: Path) -> None:
    """A read-only data directory: named as not writable."""
    import os

    if os.geteuid() == 0:
        # Root ignores permission bits; sysfs refuses new files even to root.
        data = Path("/sys/kernel")
    else:
        data = tmp_path / "ro"
        data.mkdir(mode=0o500)
    path = tmp_path / "pymail.toml"
    path.write_text(f'data_dir = "{data}"\n')
    result = run_twistd(["pymail", "--config", str(path)], tmp_path)
    assert_clean_failure(result, "is not writable")


def test_bad_endpoint(tmp_path: Path) -> None:
    """An endpoint string that does not parse: the section and the string."""
    path = write(tmp_path, '[imap]\nlisten = ["tcp:port143"]\n')
    result = run_twistd(["pymail", "--config", path], tmp_path)
    assert_clean_failure(result, "[imap] listen: 'tcp:port143' is not a valid endpoint")


def test_port_in_use(tmp_path: Path) -> None:
    """A port already in use: the section, the endpoint and the reason."""
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    try:
        others = "\n".join(f'[{s}]\nlisten = ["tcp:{free_port()}:interface=127.0.0.1"]'
                           for s in ("submission", "imap", "pop3"))
        path = write(tmp_path, f'[smtp]\nlisten = ["tcp:{port}:interface=127.0.0.1"]\n{others}\n')
        result = run_twistd(["pymail", "--config", path], tmp_path)
        assert_clean_failure(result, f"[smtp] listen: 'tcp:{port}:interface=127.0.0.1': "
                                     "cannot listen:")
        assert "Address already in use" in result.stderr
    finally:
        busy.close()


def test_embedded_default(tmp_path: Path) -> None:
    """With no --config: loopback high ports (webmail on 8080), ./pymail-data, and a hint."""
    proc = subprocess.Popen([tool("twistd"), "-n", "--pidfile=", "pymail"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", 1110), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        for port in (2525, 2587, 1143, 1110, 8080):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        assert (tmp_path / "pymail-data" / "domains").read_text().splitlines()[-1] == "localhost"
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
    assert "listening on 127.0.0.1:2525" in out
    assert "pymail user add alice@localhost" in out
    assert "Traceback" not in out


def test_account_added_while_running_can_log_in(tmp_path: Path) -> None:
    """`pymail user add` takes effect in the running server without a restart."""
    import imaplib

    proc = PymailProcess(tmp_path)
    proc.start()
    try:
        proc.pymail("user", "add", "carol@example.org", stdin="carol-pw\n")
        imap = imaplib.IMAP4("127.0.0.1", proc.ports["imap"])
        imap.login("carol@example.org", "carol-pw")
        imap.logout()
        proc.pymail("user", "disable", "carol@example.org")
        imap = imaplib.IMAP4("127.0.0.1", proc.ports["imap"])
        try:
            with pytest.raises(imaplib.IMAP4.error):
                imap.login("carol@example.org", "carol-pw")
        finally:
            imap.shutdown()
    finally:
        proc.stop()
