"""
The small HTTP layer under the pages: a route table, the request context
handed to each handler, responses, form parsing (urlencoded and
multipart, with file names), and the security headers every response
carries.
"""

from __future__ import annotations

import base64
import binascii
import email.policy
import quopri
import re
from collections.abc import Awaitable, Callable
from email.message import EmailMessage
from email.parser import BytesParser
from urllib.parse import parse_qs, unquote

import attrs
from twisted.logger import Logger
from twisted.web.server import Request, Site
from twisted.web.server import Request as IRequest

from pymail.web.compose import Upload, guess_type
from pymail.web.sessions import WebSession

log = Logger()

#: The Content-Security-Policy of every page: scripts, styles and images
#: only from this server, no inline script or style, no framing by others.
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-src 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)


#: Most fields (multipart parts included) a form may have.  The largest real
#: form is a message list page's actions (50 UID checkboxes) or a compose
#: form with its attachments; the email package's multipart parser spends
#: about 0.2 ms per part, so an unbounded count let one 35 MB body of tiny
#: parts hold the reactor for minutes.
MAX_FORM_FIELDS = 1000


def body_csp(remote_images: bool) -> str:
    """
    The policy of the frame that shows a message's sanitised HTML: no
    script at all (also sandboxed), inline styles (already filtered), images
    only inline unless the reader asked for remote ones.
    """
    images = "data: https: http:" if remote_images else "data:"
    return (f"default-src 'none'; img-src {images}; style-src 'unsafe-inline'; "
            "sandbox allow-popups allow-popups-to-escape-sandbox; form-action 'none'; "
            "frame-ancestors 'self'; base-uri 'none'")


@attrs.define
class Response:
    """What a handler answers."""

    body: bytes = b""
    status: int = 200
    content_type: str = "text/html; charset=utf-8"
    headers: dict[str, str] = attrs.Factory(dict)

    @classmethod
    def html(cls, text: str, status: int = 200) -> Response:
        return cls(text.encode("utf-8"), status)

    @classmethod
    def redirect(cls, location: str) -> Response:
        """303 See Other: after a POST, the browser GETs ``location``."""
        # Browsers read "//host", "/\\host" and "/<tab>/host" as another host.
        if (not location.startswith("/") or location[1:2] in ("/", "\\")
                or any(c in location for c in "\t\r\n\\")):
            location = "/"
        return cls(b"", 303, headers={"Location": location})


class HTTPError(Exception):
    """Stop handling and answer with this status and text."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


@attrs.define
class Form:
    """The fields (and uploaded files) of a request body or query string."""

    fields: dict[str, list[str]] = attrs.Factory(dict)
    files: list[Upload] = attrs.Factory(list)

    def get(self, name: str, default: str = "") -> str:
        values = self.fields.get(name)
        return values[0] if values else default

    def all(self, name: str) -> list[str]:
        return list(self.fields.get(name, ()))


def parse_query(request: IRequest) -> Form:
    raw = request.uri.split(b"?", 1)
    if len(raw) < 2:
        return Form()
    return Form(parse_qs(raw[1].decode("utf-8", "replace"), keep_blank_values=True))


def parse_body(request: IRequest, limit: int) -> Form:
    """
    The form in a POST body: ``application/x-www-form-urlencoded`` or
    ``multipart/form-data`` (with each file's name and type).

    :raises HTTPError: 413 over ``limit`` octets or :data:`MAX_FORM_FIELDS`
        fields (counted before parsing); 415 for another type.
    """
    content = request.content
    if content is None:
        return Form()
    content.seek(0, 2)
    if content.tell() > limit:
        raise HTTPError(413, f"The request is too large (at most {limit} octets).")
    content.seek(0)
    data = content.read()
    ctype = (request.getHeader(b"content-type") or b"").decode("latin-1")
    kind = ctype.split(";", 1)[0].strip().lower()
    too_many = HTTPError(413, f"The form has too many fields (at most {MAX_FORM_FIELDS} "
                              "fields).")
    if kind in ("", "application/x-www-form-urlencoded"):
        if data.count(b"&") >= MAX_FORM_FIELDS:
            raise too_many
        return Form(parse_qs(data.decode("utf-8", "replace"), keep_blank_values=True))
    if kind != "multipart/form-data":
        raise HTTPError(415, "Forms must be sent as urlencoded or multipart/form-data.")
    boundary = _boundary(ctype)
    if boundary is None:
        raise HTTPError(400, "The multipart form has no boundary.")
    # Each part starts with CRLF "--" boundary (RFC 2046 section 5.1.1).
    if data.count(b"\n--" + boundary) > MAX_FORM_FIELDS:
        raise too_many
    form = Form()
    for headers, payload in _multipart_parts(data, boundary):
        name = headers.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        filename = headers.get_filename()
        if filename is not None:
            if filename or payload:
                form.files.append(Upload(filename or "attachment",
                                         guess_type(filename, headers.get_content_type()),
                                         payload))
            continue
        charset = headers.get_content_charset() or "utf-8"
        try:
            text = payload.decode(charset, "replace")
        except LookupError:  # an unknown charset name
            text = payload.decode("utf-8", "replace")
        form.fields.setdefault(name, []).append(text)
    return form


def _multipart_parts(data: bytes, boundary: bytes) -> list[tuple[EmailMessage, bytes]]:
    """
    The (header, body) of each part of a multipart body, found with
    ``bytes.find`` (RFC 2046 section 5.1.1: a part ends at CRLF "--"
    boundary).  Linear in the body's size: the email package's parser goes
    line by line, and 8 MB of line feeds in one upload took it 3.4 s of the
    reactor.  Only the small header block of each part is parsed.

    :raises HTTPError: 400 when there is no first boundary or a part is not closed.
    """
    delimiter = b"--" + boundary
    separator = b"\r\n" + delimiter
    bad = HTTPError(400, "The multipart form could not be read (a part is not closed).")
    position = data.find(delimiter)
    if position < 0 or (position > 0 and data[position - 2:position] != b"\r\n"):
        raise HTTPError(400, "The multipart form could not be read (no first boundary).")
    position += len(delimiter)
    parts = []
    while not data.startswith(b"--", position):  # "--" after a boundary ends the body
        line_end = data.find(b"\r\n", position)  # after optional transport padding
        if line_end < 0:
            raise bad
        end = _next_delimiter(data, separator, line_end)
        if end < 0:
            raise bad
        part = data[line_end:end]  # starts with the CRLF ending the boundary line
        head_end = part.find(b"\r\n\r\n")
        if head_end < 0:
            head, body = part[2:], b""
        else:
            head, body = part[2:head_end + 2], part[head_end + 4:]
        headers = BytesParser(policy=email.policy.HTTP).parsebytes(head + b"\r\n",
                                                                   headersonly=True)
        assert isinstance(headers, EmailMessage)
        parts.append((headers, _decoded_body(headers, body)))
        position = end + len(separator)
    return parts


def _next_delimiter(data: bytes, separator: bytes, start: int) -> int:
    """
    Where the next CRLF "--" boundary is that really is a delimiter line: one
    followed by "--" (the end) or by optional white space and CRLF, not by
    other text (RFC 2046 section 5.1.1); -1 when there is none.
    """
    while True:
        found = data.find(separator, start)
        if found < 0:
            return -1
        after = found + len(separator)
        if data.startswith(b"--", after):
            return found
        line_end = data.find(b"\r\n", after, after + 200)
        if line_end >= 0 and not data[after:line_end].strip(b" \t"):
            return found
        start = found + 1


def _decoded_body(headers: EmailMessage, body: bytes) -> bytes:
    """A part's body, decoded when it names a transfer encoding (RFC 7578 deprecates them)."""
    encoding = str(headers.get("content-transfer-encoding", "")).strip().lower()
    if encoding == "base64":
        try:
            return base64.b64decode(body)
        except binascii.Error:
            raise HTTPError(400, "A base64 part of the form could not be decoded.") from None
    if encoding == "quoted-printable":
        return quopri.decodestring(body)
    return body


def _boundary(content_type: str) -> bytes | None:
    """The ``boundary`` parameter of a multipart Content-Type, or ``None``."""
    header = EmailMessage()
    try:
        header["Content-Type"] = content_type
        value = header.get_param("boundary")
    except Exception:  # a malformed header: no usable boundary
        return None
    if not isinstance(value, str) or not value:
        return None
    return value.encode("latin-1", "replace")


@attrs.define
class Context:
    """One request as a handler sees it."""

    request: IRequest
    params: tuple[str, ...]
    query: Form
    form: Form
    session: WebSession | None

    @property
    def client(self) -> str:
        address = self.request.getClientAddress()
        return str(getattr(address, "host", address))

    def require_session(self) -> WebSession:
        if self.session is None:
            raise HTTPError(401, "Sign in first.")
        return self.session


Handler = Callable[[Context], Awaitable[Response | None]]


@attrs.frozen
class Route:
    """
    One URL pattern.  ``public`` routes work without a session; every
    POST except sign-in must carry the session's CSRF token.
    """

    method: bytes
    pattern: re.Pattern[str]
    handler: Handler
    public: bool = False
    admin: bool = False


@attrs.define
class Router:
    routes: list[Route] = attrs.Factory(list)

    def add(self, method: str, pattern: str, handler: Handler, *, public: bool = False,
            admin: bool = False) -> None:
        self.routes.append(Route(method.encode(), re.compile(f"^{pattern}$"), handler,
                                 public, admin))

    def match(self, method: bytes, path: str) -> tuple[Route, tuple[str, ...]]:
        """
        :raises HTTPError: 404 for no such path, 405 for a path with other methods.
        """
        allowed = False
        for route in self.routes:
            found = route.pattern.match(path)
            if found is None:
                continue
            allowed = True
            if route.method == method or (method == b"HEAD" and route.method == b"GET"):
                return route, tuple(unquote(g or "", errors="strict") for g in found.groups())
        if allowed:
            raise HTTPError(405, "This method is not allowed here.")
        raise HTTPError(404, "There is nothing here.")


def security_headers(request: IRequest, csp: str = PAGE_CSP) -> None:
    """Headers every response carries."""
    request.setHeader(b"content-security-policy", csp.encode("ascii"))
    request.setHeader(b"x-content-type-options", b"nosniff")
    # same-origin: nothing leaks to other sites, and browsers still send a
    # real Origin on our own form posts (no-referrer makes it "null").
    request.setHeader(b"referrer-policy", b"same-origin")
    request.setHeader(b"x-frame-options", b"DENY")
    request.setHeader(b"cross-origin-opener-policy", b"same-origin")
    request.setHeader(b"cache-control", b"no-store")
    request.setHeader(b"server", b"pymail")


def same_origin(request: IRequest) -> bool:
    """
    Whether a state-changing request may have come from our own pages: an
    ``Origin`` header, when the browser sends one, must name this host.
    """
    origin = request.getHeader(b"origin")
    if origin is None or origin == b"null":
        return origin is None
    host = request.getHeader(b"host") or b""
    scheme = b"https" if request.isSecure() else b"http"
    return origin.lower() == scheme + b"://" + host.lower()


class BoundedRequest(Request):
    """
    A request whose body may not be larger than its site's ``max_body``.

    The check happens while the body arrives, not after: a ``Content-Length``
    over the limit is refused with 413 as soon as the header is read
    (before any of the body, and without ``100 Continue``), and a chunked
    body is counted chunk by chunk and refused the moment it passes the
    limit.  Either way the connection is closed after the 413 (RFC 9110
    section 15.5.14), so twisted.web never buffers an oversized body.
    """

    _received = 0
    refused = False

    @property
    def max_body(self) -> int | None:
        return getattr(getattr(self.channel, "site", None), "max_body", None)

    def gotLength(self, length: int | None) -> None:
        limit = self.max_body
        if limit is not None and length is not None and length > limit:
            # Not "100 Continue": the client must not send the body.
            self.requestHeaders.removeHeader(b"expect")
            self._refuse(limit)
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self.refused:
            return
        self._received += len(data)
        limit = self.max_body
        if limit is not None and self._received > limit:
            self._refuse(limit)
            return
        super().handleContentChunk(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self.refused:
            return  # answered already; the connection is closing
        super().requestReceived(command, path, version)

    def _refuse(self, limit: int) -> None:
        self.refused = True
        content = getattr(self, "content", None)
        if content is not None:
            content.close()  # a chunked body's temporary file: dropped, not kept
        self.content = None  # type: ignore[assignment]
        channel = self.channel
        if channel is None or channel.transport is None:
            return
        log.info("web: request body over {limit} octets refused (413) from {client}",
                 limit=limit, client=getattr(self.getClientAddress(), "host", "?"))
        channel.transport.write(too_large_response(limit))
        channel.loseConnection()


def too_large_response(limit: int) -> bytes:
    """The whole 413 response (the request was not read; the connection closes)."""
    text = (f"The request is too large (at most {limit} octets, the largest message "
            "this server accepts).\n").encode("ascii")
    return (b"HTTP/1.1 413 Content Too Large\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\n"
            b"X-Content-Type-Options: nosniff\r\nCache-Control: no-store\r\n"
            b"Connection: close\r\n"
            + f"Content-Length: {len(text)}\r\n\r\n".encode("ascii") + text)


class WebSite(Site):
    """
    A ``twisted.web`` site whose requests are :class:`BoundedRequest`: no
    body over ``max_body`` octets is read; twisted.web's own form parsing is
    off (the pages parse what they need with :func:`parse_body`).
    """

    def __init__(self, resource: object, max_body: int, reactor: object = None) -> None:
        super().__init__(resource, requestFactory=BoundedRequest,
                         parsePOSTFormSubmission=False, reactor=reactor)
        self.max_body = max_body


__all__ = ["MAX_FORM_FIELDS", "PAGE_CSP", "BoundedRequest", "Context", "Form", "HTTPError",
           "Response", "Route", "Router", "WebSite", "body_csp", "parse_body", "parse_query",
           "same_origin", "security_headers", "too_large_response"]
