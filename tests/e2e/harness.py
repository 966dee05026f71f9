"""
Run the real ``twistd -n pymail --config ...`` process on free loopback ports
with a temporary data directory, for end-to-end tests and benchmarks.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent
# The project is checked out beside shared/ (in CI too).
CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "corpus" / "cpython-email"

SERVICES = ("smtp", "submission", "imap", "pop3")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tool(name: str) -> str:
    """The path of a command-line tool from the venv or the system."""
    local = BIN / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} is not installed")
    return found


#: The trace headers pymail prepends to every delivered message.
TRACE = re.compile(
    rb"\AReturn-Path: <[^>\r\n]*>\r\nReceived: from [^\r\n]*\r\n(?:[ \t][^\r\n]*\r\n)*"
)


def strip_trace(message: bytes) -> bytes:
    """The message as the client sent it: without the Return-Path and Received pymail adds."""
    m = TRACE.match(message)
    assert m, f"no Return-Path/Received trace headers at the top of {message[:200]!r}"
    return message[m.end():]


def corpus_messages() -> list[Path]:
    found = sorted(CORPUS.glob("msg_*.txt"))
    if not found:
        raise FileNotFoundError(f"the test corpus is missing: no msg_*.txt in {CORPUS}")
    return found


def wire(data: bytes) -> bytes:
    """A message file (LF) in the wire form SMTP sends: CRLF, ending in CRLF."""
    data = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data


def read_imap_reply(sock: socket.socket, tag: bytes) -> bytes:
    """Everything an IMAP server sends up to and including the tagged reply line."""
    data = b""
    while True:
        chunk = sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("server closed the connection")
        data += chunk
        end = data.rfind(b"\r\n" + tag + b" ")
        if (end >= 0 or data.startswith(tag + b" ")) and data.endswith(b"\r\n"):
            return data


class PymailProcess:
    """One pymail server process and its configuration, data and log."""

    def __init__(self, root: Path, extra_config: str = "", users: dict[str, str] | None = None):
        self.root = root
        self.data_dir = root / "data"
        self.config_path = root / "pymail.toml"
        self.log_path = root / "pymail.log"
        self.ports = {name: free_port() for name in SERVICES}
        lines = ['hostname = "mx.test.example"', f'data_dir = "{self.data_dir}"',
                 'domains = ["localhost", "example.org"]']
        for name, port in self.ports.items():
            lines.append(f'[{name}]\nlisten = ["tcp:{port}:interface=127.0.0.1"]')
        self.config_path.write_text("\n".join(lines) + "\n" + extra_config)
        self.proc: subprocess.Popen[bytes] | None = None
        for address, password in (users or {}).items():
            self.pymail("user", "add", address, stdin=password + "\n")

    def pymail(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        """Run the admin command against this server's configuration."""
        return subprocess.run(
            [tool("pymail"), "--config", str(self.config_path), *args],
            input=stdin, capture_output=True, text=True, check=True, timeout=60,
        )

    def start(self, timeout: float = 20.0) -> None:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [tool("twistd"), "-n", "--pidfile=", "pymail", "--config", str(self.config_path)],
            stdout=log, stderr=subprocess.STDOUT, cwd=self.root,
        )
        log.close()
        deadline = time.monotonic() + timeout
        pending = set(self.ports.values())
        while pending:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pymail exited with {self.proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"pymail did not listen within {timeout}s:\n{self.log()}")
            for port in list(pending):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    pending.discard(port)
                except OSError:
                    pass
            time.sleep(0.05)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for_log(self, *texts: str, timeout: float = 10.0) -> str:
        """
        The log once it holds every one of ``texts``.  pymail writes a reactor
        turn's log lines together after the turn, so a line can reach the
        file a moment after the reply the client already has.
        """
        deadline = time.monotonic() + timeout
        while True:
            log = self.log()
            if all(text in log for text in texts):
                return log
            missing = [text for text in texts if text not in log]
            assert time.monotonic() < deadline, f"not in the log after {timeout}s: {missing}"
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.proc = None


def run_twistd(
    args: list[str], cwd: Path, timeout: float = 20.0
) -> subprocess.CompletedProcess[str]:
    """Run twistd to completion (for start-up failures); stdout and stderr captured."""
    env = dict(os.environ)
    return subprocess.run([tool("twistd"), "-n", "--pidfile=", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, env=env)
