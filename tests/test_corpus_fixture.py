"""The message corpus the protocol tests parametrize over is in the checkout."""

from __future__ import annotations

from pathlib import Path

CORPUS = Path(__file__).resolve().parent / "fixtures" / "corpus" / "cpython-email"


def test_corpus_is_present_so_parametrized_tests_cannot_run_empty() -> None:
    """Tests that glob the corpus at collection time would silently run zero cases without it."""
    messages = sorted(CORPUS.glob("msg_*.txt"))
    assert len(messages) >= 47, f"expected the 47+ corpus messages in {CORPUS}"
    assert all(m.stat().st_size > 0 for m in messages)
