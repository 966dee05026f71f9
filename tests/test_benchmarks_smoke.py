"""Smoke tests of the benchmark tools: the generator is deterministic and readable, the suite's --help works (no timing)."""

from __future__ import annotations

import email
import mailbox
import re
import subprocess
import sys
from email import policy
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import mailgen  # noqa: E402


def test_mailgen_same_seed_same_bytes(tmp_path: Path) -> None:
    """Two Maildirs written with the same seed hold identical file names and bytes."""
    for name in ("a", "b"):
        mailgen.write_maildir(tmp_path / name, 30)
    a = sorted((tmp_path / "a" / "cur").iterdir())
    b = sorted((tmp_path / "b" / "cur").iterdir())
    assert [p.name for p in a] == [p.name for p in b]
    assert all(x.read_bytes() == y.read_bytes() for x, y in zip(a, b))
    assert mailgen.make_message(3, 4096, seed=1) != mailgen.make_message(3, 4096, seed=2)


def test_mailgen_messages_parse_without_defects(tmp_path: Path) -> None:
    """Every generated message is well-formed MIME, and its file name carries its sizes."""
    mailgen.write_maildir(tmp_path / "box", 40)
    for path in (tmp_path / "box" / "cur").iterdir():
        data = path.read_bytes()
        message = email.message_from_bytes(data, policy=policy.default)
        assert not message.defects, (path.name, message.defects)
        wire = len(data) + data.count(b"\n")
        assert f",S={len(data)},W={wire}:2," in path.name


def test_mailgen_mbox_and_maildir_hold_the_same_messages(tmp_path: Path) -> None:
    """The mbox written for a seed holds the same messages as the Maildir, in order."""
    mailgen.write_maildir(tmp_path / "box", 25)
    mailgen.write_mbox(tmp_path / "box.mbox", 25)
    from_maildir = [p.read_bytes() for p in sorted(
        (tmp_path / "box" / "cur").iterdir(), key=lambda p: int(p.name.split(".M")[1].split("P")[0]))]
    box = mailbox.mbox(tmp_path / "box.mbox", create=False)
    try:
        # mboxrd: one ">" comes off every quoted ">*From " line.
        from_mbox = [re.sub(rb"(?m)^>(>*From )", rb"\1", box.get_bytes(key)) for key in box.keys()]
    finally:
        box.close()
    assert from_mbox == from_maildir


def test_run_all_help_has_an_example() -> None:
    """run_all.py --help exits 0 and shows how to run it."""
    out = subprocess.run([sys.executable, str(BENCHMARKS / "run_all.py"), "--help"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    assert "run_all.py --quick" in out
    assert "--max-minutes" in out
