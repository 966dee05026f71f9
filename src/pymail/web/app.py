"""
The web service: :func:`make_site` builds a ``twisted.web`` site whose one
resource, :class:`WebApp`, routes every request.

Order of checks for every request (in :meth:`WebApp.serve`): route, then
session (pages other than sign-in and the autoconfig file need one), then
admin rights, then for a POST the ``Origin`` header and the session's CSRF
token.  Handlers therefore never see an unauthenticated or forged request,
and every mail access goes through the signed-in account's own store, so
no URL can name another account's mail.
"""

from __future__ import annotations

from importlib import resources
from collections.abc import Callable
from typing import Any, TypeVar

import attrs
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import LoginFailed, UnauthorizedLogin
from twisted.cred.portal import Portal
from twisted.internet.defer import Deferred, DeferredSemaphore
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.web.server import Request as IRequest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from pymail.auth.throttle import LoginThrottle
from pymail.errors import BadMailboxName, NoSuchMailbox, NoSuchMessage
from pymail.interfaces import IAccount, IMailbox
from pymail.web import views
from pymail.web.compose import Submitter
from pymail.web.http import (
    PAGE_CSP,
    Context,
    Form,
    HTTPError,
    Response,
    Router,
    WebSite,
    parse_body,
    parse_query,
    same_origin,
    security_headers,
)
from pymail.web.messages import (
    FolderEntry,
    FolderOrder,
    SummaryCache,
    UnseenCounts,
    folder_list,
)
from pymail.web.sessions import SESSION_COOKIE, SessionStore, WebSession

log = Logger()

_T = TypeVar("_T")

#: The static files and their types.
STATIC_TYPES = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}

#: Messages taken apart in the thread pool at once: the reactor's pool also
#: checks IMAP, POP3 and SMTP passwords, so webmail views never fill it.
MAX_PARSES = 2

#: Largest request body accepted (compose with attachments), by default.
DEFAULT_MAX_BODY = 35 * 1024 * 1024

#: Largest body parsed for a route that needs no session (the sign-in form):
#: anyone may post there, so nobody unauthenticated gets a large body parsed.
PUBLIC_MAX_BODY = 16 * 1024


@attrs.frozen
class ClientSettings:
    """What the settings page and autoconfig tell mail clients: host and ports."""

    hostname: str
    imap: tuple[tuple[int, str], ...] = ()
    pop3: tuple[tuple[int, str], ...] = ()
    submission: tuple[tuple[int, str], ...] = ()


@attrs.define(eq=False)
class WebApp:
    """
    Every page.  Collaborators are injected: the portal (sign-in), the
    session store, the submitter (sending), the directory (account pages),
    the clock.
    """

    portal: Portal
    sessions: SessionStore
    submitter: Submitter
    directory: Any
    clock: IReactorTime
    settings: ClientSettings
    admins: frozenset[str] = frozenset()
    max_body: int = DEFAULT_MAX_BODY
    #: Largest message sent from the web (the submission port's SIZE), or no limit.
    max_message_size: int | None = None
    throttle: LoginThrottle | None = None
    summaries: SummaryCache = attrs.Factory(SummaryCache)
    order: FolderOrder = attrs.Factory(FolderOrder)
    counts: UnseenCounts = attrs.Factory(UnseenCounts)
    router: Router = attrs.Factory(Router)
    parses: DeferredSemaphore = attrs.Factory(lambda: DeferredSemaphore(MAX_PARSES))

    def __attrs_post_init__(self) -> None:
        from pymail.web import account, folders, mail

        account.add_routes(self)
        folders.add_routes(self)
        mail.add_routes(self)
        self.router.add("GET", "/static/([a-z]+\\.(?:js|css))", self._static, public=True)

    async def _static(self, ctx: Context) -> Response:
        (name,) = ctx.params
        if name not in STATIC_TYPES:
            raise HTTPError(404, "There is nothing here.")
        data = (resources.files("pymail.web") / "static" / name).read_bytes()
        return Response(data, content_type=STATIC_TYPES[name],
                        headers={"Cache-Control": "max-age=300"})

    # -- the request pipeline -----------------------------------------------------------

    def session_of(self, request: IRequest, touch: bool = True) -> WebSession | None:
        cookie = request.getCookie(SESSION_COOKIE)
        return self.sessions.get(cookie.decode("ascii", "replace") if cookie else None, touch)

    async def serve(self, request: IRequest) -> None:
        security_headers(request)
        try:
            response = await self._dispatch(request)
        except HTTPError as e:
            response = self.error(request, e.status, e.text)
        except Exception:
            log.failure("web request {method} {path} failed", method=request.method,
                        path=request.path)
            response = self.error(request, 500, "Something went wrong on the server.")
        if response is None:
            return  # the handler streams its own response
        self.write(request, response)

    async def _dispatch(self, request: IRequest) -> Response | None:
        try:
            path = request.path.decode("ascii")
        except UnicodeDecodeError:
            raise HTTPError(400, "The address is not valid.") from None
        try:
            route, params = self.router.match(request.method, path)
        except UnicodeDecodeError:
            raise HTTPError(404, "There is nothing here.") from None
        session = self.session_of(request)
        if session is None and not route.public:
            if request.method == b"GET":
                return Response.redirect("/signin")
            raise HTTPError(403, "Your session has ended; sign in again.")
        if route.admin and (session is None or session.address not in self.admins):
            raise HTTPError(403, "Only administrators may use this page.")
        form = Form()
        if request.method == b"POST":
            if not same_origin(request):
                raise HTTPError(403, "This request came from another site and was refused.")
            form = parse_body(request, PUBLIC_MAX_BODY if route.public else self.max_body)
            if not route.public:
                assert session is not None
                from pymail.web.sessions import tokens_match

                if not tokens_match(form.get("csrf"), session.csrf):
                    raise HTTPError(403, "The form was out of date or forged (CSRF token); "
                                    "reload the page and try again.")
        return await route.handler(Context(request, params, parse_query(request), form,
                                           session))

    def write(self, request: IRequest, response: Response) -> None:
        request.setResponseCode(response.status)
        request.setHeader(b"content-type", response.content_type.encode("latin-1"))
        for name, value in response.headers.items():
            request.setHeader(name.encode("latin-1"), value.encode("latin-1"))
        if request.method != b"HEAD":
            request.write(response.body)
        request.finish()

    def error(self, request: IRequest, status: int, text: str) -> Response:
        security_headers(request, PAGE_CSP)
        return Response.html(views.error_page(status, text), status)

    # -- helpers for handlers -----------------------------------------------------------

    async def sign_in(self, username: str, password: str, client: str
                      ) -> tuple[IAccount, Any] | None:
        """
        The one place the web checks a password (sign-in and password
        change): through the portal and the login throttle shared with IMAP,
        POP3 and submission.  ``None`` when refused.
        """
        credentials = UsernamePassword(username.strip().lower().encode("utf-8"),
                                       password.encode("utf-8"))
        try:
            if self.throttle is not None:
                _, avatar, logout = await self.throttle.login(
                    self.portal, credentials, IAccount, peer=client, service="web")
            else:
                _, avatar, logout = await self.portal.login(credentials, None, IAccount)
        except (UnauthorizedLogin, LoginFailed):
            log.info("web sign-in failed for {username} from {client}", username=username,
                     client=client)
            return None
        return avatar, logout

    def set_cookie(self, request: IRequest, name: bytes, value: str, max_age: int | None
                   ) -> None:
        request.addCookie(name, value.encode("ascii"), path=b"/", httpOnly=True,
                          secure=request.isSecure(), sameSite="strict",
                          max_age=None if max_age is None else str(max_age).encode())

    async def page(self, ctx: Context, title: str, body: str, current: str | None = None,
                   body_data: dict[str, str] | None = None, status: int = 200,
                   search: views.SearchState | None = None,
                   folders: list[FolderEntry] | None = None) -> Response:
        """
        ``body`` in the signed-in layout (folder list with unread counts).

        :param folders: the folder list, when the caller built it for the
            body already (each build opens and counts every folder).
        """
        session = ctx.require_session()
        if folders is None:
            folders = await folder_list(session.account.store, self.counts)
        html = views.layout(title, body, address=session.address, csrf=session.csrf,
                            folders=folders, current=current,
                            is_admin=session.address in self.admins, body_data=body_data,
                            search=search)
        return Response.html(html, status)

    async def mailbox(self, ctx: Context, name: str) -> IMailbox:
        """
        A folder of the signed-in account.

        :raises HTTPError: 404 for a folder that does not exist or a bad name.
        """
        try:
            return await ctx.require_session().account.store.get_mailbox(name)
        except (NoSuchMailbox, BadMailboxName):
            raise HTTPError(404, f"There is no folder {name!r}.") from None

    @staticmethod
    def uid(mailbox: IMailbox, text: str) -> int:
        """
        A UID from a URL that names a message in ``mailbox``.

        :raises HTTPError: 404 when it does not.
        """
        try:
            uid = int(text)
            mailbox.info(uid)
        except (ValueError, NoSuchMessage):
            raise HTTPError(404, "There is no such message in this folder.") from None
        return uid

    def pause(self) -> Deferred[None]:
        return deferLater(self.clock, 0, lambda: None)

    def in_thread(self, work: Callable[[], _T]) -> Deferred[_T]:
        """
        Run ``work`` in the reactor's thread pool: CPU-heavy work (parsing a
        big message, hashing a password) and blocking I/O stay off the
        reactor, so every other connection is served meanwhile.
        """
        reactor: Any = self.clock
        return deferToThreadPool(reactor, reactor.getThreadPool(), work)

    def parse_in_thread(self, work: Callable[[], _T]) -> Deferred[_T]:
        """:meth:`in_thread` for taking a message apart: at most :data:`MAX_PARSES` at once."""
        return self.parses.run(self.in_thread, work)


class WebResource(Resource):
    """The one ``twisted.web`` resource: hands every request to :meth:`WebApp.serve`."""

    isLeaf = True

    def __init__(self, app: WebApp) -> None:
        super().__init__()
        self.app = app

    def render(self, request: IRequest) -> Any:
        Deferred.fromCoroutine(self.app.serve(request))
        return NOT_DONE_YET


def make_site(app: WebApp) -> Site:
    """The ``twisted.web`` site for a :class:`WebApp` (no access log of its own)."""
    site = WebSite(WebResource(app), max_body=app.max_body, reactor=app.clock)
    site.displayTracebacks = False
    site.log = lambda request: None  # type: ignore[method-assign]
    return site
