"""Tests for ``pymail queue``: list, show, flush, delete on a real spool."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pymail.cli import main
from pymail.relay.queue import QueuedMessage, QueuedRecipient, Spool
from pymail.testing import ThreadlessReactor


def setup_queue(tmp_path: Path) -> tuple[Path, Spool]:
    data = tmp_path / "data"
    config = tmp_path / "pymail.toml"
    config.write_text(f'data_dir = "{data}"\n')
    spool = Spool(str(data / "queue"), ThreadlessReactor())
    entry = QueuedMessage("Q1", "alice@example.com",
                          [QueuedRecipient("bob@remote.example", reply="451 4.3.0 busy",
                                           remote="mx.remote.example [192.0.2.1]")],
                          created=1000.0, next_attempt=5000.0, attempts=2)
    spool.add(entry, b"Subject: hi\r\n\r\nbody\r\n")
    return config, spool


def test_list_show_flush_delete(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Each queue action works on the spool files and says what it did."""
    config, spool = setup_queue(tmp_path)
    assert main(["--config", str(config), "queue", "list"]) == 0
    out = capsys.readouterr().out
    assert "Q1" in out and "<alice@example.com> -> bob@remote.example" in out
    assert "last reply: 451 4.3.0 busy" in out
    assert main(["--config", str(config), "queue", "show", "Q1", "--message"]) == 0
    out = capsys.readouterr().out
    assert "attempts:     2" in out and "mx.remote.example [192.0.2.1]: 451 4.3.0 busy" in out
    assert "Subject: hi" in out
    assert main(["--config", str(config), "queue", "flush"]) == 0
    assert "1 message(s) marked" in capsys.readouterr().out
    assert spool.read_envelope_now("Q1").next_attempt != 5000.0
    assert main(["--config", str(config), "queue", "delete", "Q1"]) == 0
    assert os.listdir(spool.path) == []
    assert main(["--config", str(config), "queue", "show", "Q1"]) == 1
    assert "no queued message Q1" in capsys.readouterr().err


def test_empty_queue_not_created(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Listing a queue that was never used says so and creates nothing."""
    config = tmp_path / "pymail.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\n')
    assert main(["--config", str(config), "queue", "list"]) == 0
    assert "The queue is empty." in capsys.readouterr().out
    assert not (tmp_path / "data" / "queue").exists()


def test_help_has_examples() -> None:
    """`pymail queue --help` shows examples."""
    result = subprocess.run([sys.executable, "-m", "pymail.cli", "queue", "--help"],
                            capture_output=True, text=True, check=True)
    assert "pymail queue flush" in result.stdout


def test_flush_progress_on_terminal(tmp_path: Path) -> None:
    """On a terminal, flush shows a running count."""
    from pymail.relay.admin import flush

    _, spool = setup_queue(tmp_path)

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Terminal()
    flush(spool, out, now=42.0)
    assert "\rflushing 1/1" in out.getvalue()
    assert spool.read_envelope_now("Q1").next_attempt == 42.0
