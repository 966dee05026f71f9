"""Fixtures that start the real pymail process."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from harness import PymailProcess  # noqa: E402

USERS = {"alice@localhost": "alice-pw", "bob@example.org": "bob-pw"}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[PymailProcess]:
    proc = PymailProcess(tmp_path, users=USERS)
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()
