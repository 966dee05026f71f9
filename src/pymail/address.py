"""
Mail addresses as values: parsing SMTP paths (RFC 5321 section 4.1.2), the
null reverse-path, IDNA and case rules, and the length limits of RFC 5321
section 4.5.3.1.

:class:`Address` is what every part of pymail passes around: the SMTP
server parses envelope paths into it, the delivery policy resolves it
against the directory, the mail log prints it.

Case rules: the domain is case-insensitive and kept lower-cased, in its
ASCII (A-label) form; the local part is kept exactly as sent (RFC 5321
section 2.4 says only the receiving host may interpret its case; pymail's
directory decides).  A quoted local part whose quotes were not needed
(``"joe"@example.com``) is the same address as the unquoted one.
"""

from __future__ import annotations

import functools
import ipaddress
import re

import attrs
import idna

from pymail.errors import BadAddress

#: RFC 5321 section 4.5.3.1.1: the longest local part, in octets.
MAX_LOCAL_PART = 64
#: RFC 5321 section 4.5.3.1.2: the longest domain, in octets.
MAX_DOMAIN = 255
#: RFC 5321 section 4.5.3.1.3: the longest path, in octets, including the
#: angle brackets and any source route.
MAX_PATH = 256

# atext of RFC 5322 section 3.2.3 (what a Dot-string atom may contain).
_ATEXT = "A-Za-z0-9!#$%&'*+\\-/=?^_`{|}~"
_DOT_STRING = re.compile(rf"[{_ATEXT}]+(?:\.[{_ATEXT}]+)*\Z")
_DOT_STRING_UTF8 = re.compile(rf"(?:[{_ATEXT}]|[^\x00-\x7f])+(?:\.(?:[{_ATEXT}]|[^\x00-\x7f])+)*\Z")
_LDH_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")


class AddressError(BadAddress):
    """
    A path or address that is not acceptable.  ``str()`` says what was
    wrong and what would be accepted, ready to follow an SMTP reply code.

    :ivar too_long: the address broke a length limit (rather than the
        syntax), which SMTP answers with its own wording.
    """

    def __init__(self, message: str, *, too_long: bool = False) -> None:
        super().__init__(message)
        self.too_long = too_long


@attrs.frozen
class Address:
    """
    One mailbox address, ``local@domain``.

    :ivar local: the local part, unquoted (``"a b"@x`` has local ``a b``).
    :ivar domain: lower-case; an ASCII (A-label) domain name, or an address
        literal such as ``[192.0.2.1]`` or ``[IPv6:2001:db8::1]``.  Empty
        only in the null reverse-path.
    :ivar source_route: the ``@a,@b:`` route of an old-style source-routed
        path, without the ``@``.  RFC 5321 section 4.1.1.3 and appendix C:
        it is parsed and then ignored, never followed.  Not part of
        equality.
    """

    local: str
    domain: str
    source_route: tuple[str, ...] = attrs.field(default=(), eq=False, repr=False)
    # str(self), made on first use: the SMTP server writes an address into
    # the Received header, the log and the envelope, each time through a
    # regular expression (local_quoted).
    _text: str | None = attrs.field(default=None, init=False, eq=False, repr=False)

    @classmethod
    def null(cls) -> Address:
        """The null reverse-path ``<>`` (bounces and other notifications)."""
        return cls("", "")

    @property
    def is_null(self) -> bool:
        """Whether this is the null reverse-path ``<>``."""
        return self.local == "" and self.domain == ""

    @property
    def has_relay_syntax(self) -> bool:
        """
        Whether the address carries routing that another host might follow:
        a source route, or a local part with ``@``, ``%`` (the "percent
        hack") or ``!`` (a UUCP bang path).  Harmless for local delivery,
        where the directory just sees an odd local part; refused for mail
        that would leave the server, so it cannot be bounced onward.
        """
        return bool(self.source_route) or any(c in self.local for c in "@%!")

    @property
    def local_quoted(self) -> str:
        """The local part as it must be written in a path: quoted if needed."""
        if _DOT_STRING_UTF8.match(self.local):
            return self.local
        escaped = self.local.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'

    @property
    def domain_unicode(self) -> str:
        """The domain with IDNA A-labels turned back into Unicode, for display."""
        if self.domain.startswith("[") or "xn--" not in self.domain:
            return self.domain
        try:
            return idna.decode(self.domain)
        except idna.IDNAError:
            return self.domain

    @property
    def path(self) -> str:
        """The address as an SMTP path: ``<local@domain>``, or ``<>``."""
        return f"<{self}>"

    def __str__(self) -> str:
        text = self._text
        if text is None:
            text = "" if self.is_null else f"{self.local_quoted}@{self.domain}"
            object.__setattr__(self, "_text", text)
        return text

    @classmethod
    def parse(cls, text: str, *, allow_null: bool = False, smtputf8: bool = False) -> Address:
        """
        Parse an SMTP path (``<local@domain>``) or a bare mailbox.

        :param allow_null: accept ``<>`` (a reverse-path) and return
            :meth:`null`.
        :param smtputf8: accept non-ASCII local parts and domains (RFC 6531);
            the domain is converted to its A-label form.
        :raises AddressError: the syntax or a length limit is wrong.
        """
        # The specific limits (local part, domain) are checked first, for
        # the clearer message; a grossly long text is refused before parsing.
        if len(text) > 4 * MAX_PATH:
            _check_path_length(text)
        inner = text
        if text.startswith("<"):
            if not text.endswith(">") or len(text) < 2:
                raise AddressError(f"Path {text!r} must end with '>'")
            inner = text[1:-1]
        elif text.endswith(">"):
            raise AddressError(f"Path {text!r} must start with '<'")
        if inner == "":
            if allow_null:
                return cls.null()
            raise AddressError("Empty address <> is only allowed as a sender")
        route: tuple[str, ...] = ()
        if inner.startswith("@"):
            route_text, colon, inner = inner.partition(":")
            if not colon:
                raise AddressError(f"Source route in {text!r} must end with ':'")
            route = tuple(_parse_route(route_text, smtputf8))
        local, domain_text = _split_mailbox(inner, text, smtputf8)
        domain = _parse_domain(domain_text, smtputf8)
        _check_path_length(text)
        return cls(local, domain, route)


def _check_path_length(text: str) -> None:
    # The limit counts the angle brackets, whether or not the client sent them.
    octets = len(text.encode("utf-8")) + (0 if text.startswith("<") else 2)
    if octets > MAX_PATH:
        raise AddressError(f"Path too long ({octets} octets, max {MAX_PATH})", too_long=True)


def split_path(text: str) -> tuple[str, str]:
    """
    Split the argument of ``MAIL FROM:`` or ``RCPT TO:`` into the path and
    the rest (the ESMTP parameters), respecting quoted local parts, which may
    hold spaces and ``>``.  A path without angle brackets ends at the first
    space.

    :raises AddressError: an unterminated quoted string or path.
    """
    if not text.startswith("<"):
        path, _, rest = text.partition(" ")
        return path, rest.strip(" ")
    if '"' not in text:
        # No quoted local part (the usual ``<a@b> ...``): the path ends at
        # the first ">", found without walking the text in Python.
        end = text.find(">")
        if end > 0:
            return text[: end + 1], text[end + 1 :].strip(" ")
    in_quotes = False
    escaped = False
    for i, c in enumerate(text):
        if escaped:
            escaped = False
        elif c == "\\" and in_quotes:
            escaped = True
        elif c == '"':
            in_quotes = not in_quotes
        elif c == ">" and not in_quotes:
            return text[: i + 1], text[i + 1 :].strip(" ")
    raise AddressError(f"Path {text!r} has no closing '>'")


def _parse_route(route_text: str, smtputf8: bool) -> list[str]:
    hops = []
    for hop in route_text.split(","):
        if not hop.startswith("@") or len(hop) < 2:
            raise AddressError(f"Bad source route {route_text!r}: each hop must be '@domain'")
        hops.append(_parse_domain(hop[1:], smtputf8))
    return hops


def _split_mailbox(inner: str, original: str, smtputf8: bool) -> tuple[str, str]:
    """Split ``local@domain``; give the unquoted local part and the domain text."""
    if inner.startswith('"'):
        chars = []
        i = 1
        while True:
            if i >= len(inner):
                raise AddressError(f"Unterminated quoted local part in {original!r}")
            c = inner[i]
            if c == "\\":
                if i + 1 >= len(inner):
                    raise AddressError(f"Unterminated quoted local part in {original!r}")
                chars.append(_quoted_char(inner[i + 1], original, smtputf8, pair=True))
                i += 2
            elif c == '"':
                break
            else:
                chars.append(_quoted_char(c, original, smtputf8, pair=False))
                i += 1
        local = "".join(chars)
        rest = inner[i + 1 :]
        if not rest.startswith("@"):
            raise AddressError(f"Address {original!r} needs '@domain' after the local part")
        domain_text = rest[1:]
    else:
        local, at, domain_text = inner.rpartition("@")
        if not at:
            raise AddressError(f"Address {original!r} needs a domain: use <local@domain>")
        if not (_DOT_STRING_UTF8 if smtputf8 else _DOT_STRING).match(local):
            if not smtputf8 and not local.isascii():
                raise AddressError(f"Non-ASCII address {original!r} needs SMTPUTF8")
            raise AddressError(
                f"Bad local part {local!r}: use dot-separated atoms or a quoted string"
            )
    if len(local.encode("utf-8")) > MAX_LOCAL_PART:
        raise AddressError(
            f"Local part too long ({len(local.encode('utf-8'))} octets, max {MAX_LOCAL_PART})",
            too_long=True,
        )
    return local, domain_text


def _quoted_char(c: str, original: str, smtputf8: bool, *, pair: bool) -> str:
    # RFC 5321: qtextSMTP = %d32-33 / %d35-91 / %d93-126; quoted-pairSMTP = "\" %d32-126
    if ord(c) > 126:
        if smtputf8:
            return c
        raise AddressError(f"Non-ASCII address {original!r} needs SMTPUTF8")
    if ord(c) < 32 or (not pair and c in '"\\'):
        raise AddressError(f"Bad character {c!r} in quoted local part of {original!r}")
    return c


#: Domains kept checked (see _parse_domain).
CHECKED_DOMAINS_CACHE = 4096


# Mail for the same few domains comes again and again: each is checked once
# (the lru_cache keeps only valid ones: an error is raised again each time).
@functools.lru_cache(maxsize=CHECKED_DOMAINS_CACHE)
def _parse_domain(text: str, smtputf8: bool) -> str:
    """Validate a domain or address literal; give its canonical form."""
    return _check_domain(text, smtputf8)


def _check_domain(text: str, smtputf8: bool) -> str:
    if text.startswith("["):
        return _parse_address_literal(text)
    if len(text.encode("utf-8")) > MAX_DOMAIN:
        raise AddressError(
            f"Domain too long ({len(text.encode('utf-8'))} octets, max {MAX_DOMAIN})",
            too_long=True,
        )
    if not text:
        raise AddressError("Missing domain after '@'")
    if not text.isascii():
        if not smtputf8:
            raise AddressError(f"Non-ASCII domain {text!r} needs SMTPUTF8")
        try:
            text = idna.encode(text, uts46=True).decode("ascii")
        except idna.IDNAError as e:
            raise AddressError(f"Bad internationalised domain {text!r}: {e}") from None
    domain = text.lower()
    labels = domain.split(".")
    for label in labels:
        if not _LDH_LABEL.match(label):
            raise AddressError(
                f"Bad domain {text!r}: labels are letters, digits and inner hyphens, 1-63 long"
            )
    if any(label.startswith("xn--") for label in labels):
        try:
            idna.decode(domain)
        except idna.IDNAError as e:
            raise AddressError(f"Bad IDNA domain {text!r}: {e}") from None
    if len(domain) > MAX_DOMAIN:
        raise AddressError(f"Domain too long (max {MAX_DOMAIN} octets)", too_long=True)
    return domain


def _parse_address_literal(text: str) -> str:
    if not text.endswith("]"):
        raise AddressError(f"Address literal {text!r} must end with ']'")
    body = text[1:-1]
    if body[:5].lower() == "ipv6:":
        try:
            return f"[IPv6:{ipaddress.IPv6Address(body[5:]).compressed}]"
        except ValueError:
            raise AddressError(f"Bad IPv6 address literal {text!r}") from None
    try:
        return f"[{ipaddress.IPv4Address(body)}]"
    except ValueError:
        raise AddressError(
            f"Bad address literal {text!r}: use [192.0.2.1] or [IPv6:2001:db8::1]"
        ) from None


@attrs.frozen
class EnvelopeRecipient:
    """
    One accepted ``RCPT TO``: the address as given, where it goes, and its
    RFC 3461 DSN parameters.

    :ivar address: the recipient as the client gave it.
    :ivar targets: canonical local accounts and remote addresses the
        routing found for it (an alias may give several).
    :ivar notify: the NOTIFY keywords (``SUCCESS``, ``FAILURE``,
        ``DELAY``, or ``NEVER`` alone), or ``None`` when not given.
    :ivar orcpt: the ORCPT value (``rfc822;addr``, xtext decoded), or ``None``.
    """

    address: Address
    targets: tuple[str, ...]
    notify: tuple[str, ...] | None = None
    orcpt: str | None = None


@attrs.frozen
class Envelope:
    """
    The envelope of one accepted message, as the SMTP server hands it to
    the delivery policy.

    :ivar queue_id: the id in the logs, the Received header and the queue.
    :ivar sender: the reverse-path (possibly null).
    :ivar recipients: the accepted recipients, in RCPT order.
    :ivar client: the client's IP address, or ``"local"``.
    :ivar ret: RFC 3461 RET (``FULL`` or ``HDRS``) or ``None``.
    :ivar envid: RFC 3461 ENVID (xtext decoded) or ``None``.
    :ivar smtputf8: the client used the SMTPUTF8 parameter (RFC 6531).
    :ivar body: the BODY parameter (``7BIT``, ``8BITMIME``) or ``None``.
    """

    queue_id: str
    sender: Address
    recipients: tuple[EnvelopeRecipient, ...]
    client: str = "local"
    ret: str | None = None
    envid: str | None = None
    smtputf8: bool = False
    body: str | None = None


def xtext_decode(text: str) -> str:
    """
    Decode RFC 3461 section 4 xtext (``+XX`` hex escapes).

    :raises AddressError: a malformed escape or a character xtext forbids.
    """
    out = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "+":
            pair = text[i + 1 : i + 3]
            if len(pair) != 2 or not all(h in "0123456789ABCDEF" for h in pair):
                raise AddressError(f"Bad xtext escape in {text!r}: use +XX, upper-case hex")
            out.append(chr(int(pair, 16)))
            i += 3
            continue
        if not ("!" <= c <= "~") or c == "=":
            raise AddressError(f"Bad character {c!r} in xtext {text!r}")
        out.append(c)
        i += 1
    return "".join(out)


def xtext_encode(text: str) -> str:
    """Encode ``text`` as RFC 3461 xtext (the inverse of :func:`xtext_decode`)."""
    return "".join(
        c if ("!" <= c <= "~" and c not in "+=") else "".join(f"+{b:02X}" for b in c.encode())
        for c in text
    )
