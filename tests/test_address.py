"""Tests for pymail.address: SMTP path parsing, quoting, IDNA and limits."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pymail.address import MAX_PATH, Address, AddressError, split_path
from pymail.errors import BadAddress


def test_parse_simple_path() -> None:
    """A plain path parses into local part and lower-cased domain."""
    address = Address.parse("<John.Doe@Example.COM>")
    assert address == Address("John.Doe", "example.com")
    assert str(address) == "John.Doe@example.com"
    assert address.path == "<John.Doe@example.com>"


def test_parse_bare_mailbox() -> None:
    """A mailbox without angle brackets is accepted too."""
    assert Address.parse("a@example.com") == Address("a", "example.com")


def test_null_path_only_when_allowed() -> None:
    """<> is the null reverse-path when allowed and an error otherwise."""
    null = Address.parse("<>", allow_null=True)
    assert null.is_null
    assert null.path == "<>"
    assert str(null) == ""
    with pytest.raises(AddressError, match="only allowed as a sender"):
        Address.parse("<>")


def test_quoted_local_part() -> None:
    """A quoted local part may hold spaces, '@' and escaped quotes."""
    address = Address.parse(r'<"john \"jd\" doe@home"@example.com>')
    assert address.local == 'john "jd" doe@home'
    assert address.path == r'<"john \"jd\" doe@home"@example.com>'


def test_needless_quotes_are_the_same_address() -> None:
    """ "joe"@x and joe@x are equal and print without quotes."""
    assert Address.parse('<"joe"@example.com>') == Address.parse("<joe@example.com>")
    assert str(Address.parse('<"joe"@example.com>')) == "joe@example.com"


def test_source_route_is_parsed_and_ignored() -> None:
    """A source route is kept aside, flagged as relay syntax, and not part of equality."""
    address = Address.parse("<@relay.one,@Relay.Two:user@example.com>")
    assert address == Address("user", "example.com")
    assert address.source_route == ("relay.one", "relay.two")
    assert address.has_relay_syntax


@pytest.mark.parametrize("local", ['"a@b"', "a%b", "a!b"])
def test_relay_syntax_in_local_part(local: str) -> None:
    """'@', '%' and '!' in the local part mark an address as relay syntax."""
    assert Address.parse(f"<{local}@example.com>").has_relay_syntax


def test_plain_address_has_no_relay_syntax() -> None:
    """An ordinary address is not relay syntax."""
    assert not Address.parse("<a.b+tag@example.com>").has_relay_syntax


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("<a@b@example.com>", "Bad local part"),
        ("<example.com>", "needs a domain"),
        ("<a@>", "Missing domain"),
        ("<a@-bad.example>", "Bad domain"),
        ("<a@exa_mple.com>", "Bad domain"),
        ("<a..b@example.com>", "Bad local part"),
        ("<a@example.com", "must end with '>'"),
        ("a@example.com>", "must start with '<'"),
        ('<"open@example.com>', "Unterminated"),
        ("<@relay:>", "needs a domain"),
        ("<@relay,bad:a@example.com>", "Bad source route"),
        ("<a@[300.1.1.1]>", "Bad address literal"),
        ("<a@[IPv6:zz::1]>", "Bad IPv6"),
        ("<jöe@example.com>", "needs SMTPUTF8"),
        ("<a@exämple.com>", "needs SMTPUTF8"),
        ("<a@xn--zz.com>", "Bad IDNA"),
    ],
)
def test_bad_syntax(text: str, message: str) -> None:
    """Malformed paths are refused with a message saying what is wrong."""
    with pytest.raises(AddressError, match=message) as info:
        Address.parse(text)
    assert not info.value.too_long


def test_address_error_is_a_bad_address() -> None:
    """AddressError belongs to pymail's error hierarchy."""
    assert issubclass(AddressError, BadAddress)


def test_local_part_limit() -> None:
    """A 64-octet local part is fine; 65 is too long (RFC 5321 4.5.3.1.1)."""
    assert Address.parse(f"<{'a' * 64}@example.com>").local == "a" * 64
    with pytest.raises(AddressError, match=r"Local part too long \(65 octets, max 64\)") as info:
        Address.parse(f"<{'a' * 65}@example.com>")
    assert info.value.too_long


def test_domain_limit() -> None:
    """A domain over 255 octets is too long (RFC 5321 4.5.3.1.2)."""
    domain = ".".join(["a" * 63] * 4)  # 255 octets
    assert len(domain) == 255
    with pytest.raises(AddressError, match="Domain too long") as info:
        Address.parse(f"a@{domain}x")
    assert info.value.too_long


def test_path_limit() -> None:
    """A path over 256 octets, brackets included, is too long (RFC 5321 4.5.3.1.3)."""
    domain = ".".join(["b" * 60] * 4)
    ok = f"<{'a' * (MAX_PATH - len(domain) - 3)}@{domain}>"
    assert len(ok) == MAX_PATH
    Address.parse(ok)
    with pytest.raises(AddressError, match=r"Path too long \(257 octets, max 256\)"):
        Address.parse(ok[:1] + "a" + ok[1:])


def test_address_literals() -> None:
    """IPv4 and IPv6 address literals are accepted and normalised."""
    assert Address.parse("<a@[192.0.2.1]>").domain == "[192.0.2.1]"
    assert Address.parse("<a@[ipv6:2001:DB8:0::1]>").domain == "[IPv6:2001:db8::1]"


def test_idna_with_smtputf8() -> None:
    """With SMTPUTF8 a Unicode domain becomes its A-label form, shown back as Unicode."""
    address = Address.parse("<jöe@Bücher.example>", smtputf8=True)
    assert address.domain == "xn--bcher-kva.example"
    assert address.domain_unicode == "bücher.example"
    assert address.local == "jöe"


def test_a_label_domain_accepted_without_smtputf8() -> None:
    """A valid A-label domain is plain ASCII and needs no SMTPUTF8."""
    assert Address.parse("<a@XN--BCHER-KVA.example>").domain == "xn--bcher-kva.example"


def test_split_path_with_parameters() -> None:
    """split_path separates the path from ESMTP parameters, respecting quotes."""
    assert split_path('<"a> b"@x.example> SIZE=10 BODY=8BITMIME') == (
        '<"a> b"@x.example>',
        "SIZE=10 BODY=8BITMIME",
    )
    assert split_path("a@x.example SIZE=1") == ("a@x.example", "SIZE=1")
    with pytest.raises(AddressError, match="no closing"):
        split_path("<a@x.example")


_atext = st.sampled_from("abcXYZ019!#$%&'*+-/=?^_`{|}~")
_atoms = st.text(_atext, min_size=1, max_size=8)
_dot_strings = st.lists(_atoms, min_size=1, max_size=4).map(".".join)
_quoted_locals = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=30)
_labels = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
_domains = st.lists(_labels, min_size=1, max_size=4).map(".".join)


@given(local=st.one_of(_dot_strings, _quoted_locals), domain=_domains)
def test_path_round_trip(local: str, domain: str) -> None:
    """Any valid address printed as a path parses back to itself."""
    address = Address(local, domain)
    assert Address.parse(address.path) == address
    assert Address.parse(address.path.upper()).domain == domain


@given(st.text(max_size=300))
def test_parse_never_crashes(text: str) -> None:
    """Arbitrary input gives an Address or an AddressError, nothing else."""
    try:
        Address.parse(text, allow_null=True)
    except AddressError:
        pass
