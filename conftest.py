"""Shared pytest set-up for tests/ and the examples' own tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _run_in_tmp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # trial's TestCase.mktemp() makes paths relative to the working
    # directory: keep them out of the checkout.
    monkeypatch.chdir(tmp_path)
