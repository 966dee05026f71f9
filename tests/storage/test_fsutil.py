"""Byte-exact behaviour of the line-ending conversions in pymail.storage.fsutil."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pymail.storage.fsutil import CRLFMessage, to_crlf, to_lf, wire_size

# Messages made of the octets that matter (CR, LF) and a few others, so bare
# CRs, bare LFs, CRLFs and CR CR LF runs all turn up often.
_MESSAGES = st.lists(st.sampled_from([b"\r", b"\n", b"\r\n", b"a", b" ", b"\x00"])).map(b"".join)


def _reference_to_crlf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def _reference_to_lf(message: bytes) -> bytes:
    return message.replace(b"\r\n", b"\n")


@given(_MESSAGES)
def test_to_crlf_matches_the_reference(data: bytes) -> None:
    """to_crlf gives exactly what the plain two-replace reference gives, for any octets."""
    assert to_crlf(data) == _reference_to_crlf(data)


@given(_MESSAGES)
def test_to_lf_matches_the_reference(message: bytes) -> None:
    """to_lf turns every CRLF into LF and leaves bare CRs and LFs as they are."""
    assert to_lf(message) == _reference_to_lf(message)


@given(_MESSAGES)
def test_wire_size_is_the_length_of_to_crlf(data: bytes) -> None:
    """wire_size predicts the length of to_crlf's output without building it."""
    assert wire_size(data) == len(to_crlf(data))


def test_to_crlf_keeps_a_bare_cr() -> None:
    """A CR not followed by LF is stored and served as it is."""
    assert to_crlf(b"a\rb\nc\r\n") == b"a\rb\r\nc\r\n"


def test_to_lf_of_a_large_message_matches_the_reference() -> None:
    """A message too large to split into lines converts the same, byte for byte."""
    line = b"x\r\ny\rz\n\r\r\n"
    message = line * (1024 * 1024 // len(line) + 1)
    assert len(message) > 1024 * 1024
    assert to_lf(message) == _reference_to_lf(message)
    assert to_lf(message[: 1024 * 1024]) == _reference_to_lf(message[: 1024 * 1024])


# Messages whose every CR and LF is part of a CRLF: what the SMTP server
# hands over as a CRLFMessage.
_CRLF_ONLY = st.lists(st.sampled_from([b"\r\n", b"a", b".", b" ", b"\x00"])).map(b"".join)


@given(_CRLF_ONLY)
def test_to_lf_of_a_crlf_message_matches_the_reference(message: bytes) -> None:
    """The one-pass conversion of a CRLFMessage gives what the reference gives, as plain bytes."""
    converted = to_lf(CRLFMessage(message))
    assert converted == _reference_to_lf(message)
    assert type(converted) is bytes
