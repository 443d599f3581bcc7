"""The app's security middleware and the one way to write a POST endpoint (`post_endpoint`: CSRF checked).

Middleware, for every request: the Host header (loopback names only when there is no token), the CSRF nonce
cookie (set on first visit), authentication (login redirect for pages, 401 for JSON), and security headers
(a Content-Security-Policy without inline script, nosniff, no referrer, no framing, no caching of pages).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

from starlette.datastructures import FormData, MutableHeaders, UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pipeline.web.auth import CSRF_COOKIE, CSRF_FIELD, CSRF_HEADER, Guard, cross_site, is_loopback, new_nonce

#: paths anyone may open (the login form and the static files it uses)
PUBLIC_PREFIXES = ("/login", "/static/")
#: a wrong token at the login form costs this long (slows guessing)
LOGIN_FAIL_DELAY_S = 0.5


def wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api/") or "application/json" in request.headers.get("accept", "")


class SecurityMiddleware:
    def __init__(self, app: ASGIApp, guard: Guard, *, img_origins: tuple[str, ...] = ()) -> None:
        self.app = app
        self.guard = guard
        img = " ".join(("'self'", "data:", *img_origins))
        self.csp = (f"default-src 'none'; script-src 'self'; style-src 'self'; img-src {img}; connect-src 'self'; "
                    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        host = (request.url.hostname or "").lower()
        if self.guard.token is None and not is_loopback(host):
            await PlainTextResponse("this app answers to loopback host names only", 400)(scope, receive, send)
            return
        nonce = request.cookies.get(CSRF_COOKIE)
        set_nonce = None
        if not nonce:
            nonce = set_nonce = new_nonce()
        scope.setdefault("state", {})["csrf_token"] = self.guard.csrf_for(nonce)
        scope["state"]["csrf_nonce"] = nonce
        path = request.url.path
        public = path.startswith(PUBLIC_PREFIXES)
        if not public and not self.guard.authenticated(request):
            response: Response
            if wants_json(request) or request.method != "GET":
                response = JSONResponse({"error": "authentication required"}, 401)
            else:
                nxt = path + (f"?{request.url.query}" if request.url.query else "")
                response = RedirectResponse(f"/login?next={quote(nxt, safe='')}", 303)
            await self._send(response, scope, receive, send, set_nonce)
            return

        async def send_wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                self._headers(MutableHeaders(scope=message), set_nonce)
            await send(message)

        await self.app(scope, receive, send_wrapped)

    async def _send(self, response: Response, scope: Scope, receive: Receive, send: Send,
                    set_nonce: str | None) -> None:
        self._headers(response.headers, set_nonce)
        await response(scope, receive, send)

    def _headers(self, headers: MutableHeaders, set_nonce: str | None) -> None:
        headers.setdefault("content-security-policy", self.csp)
        headers["x-content-type-options"] = "nosniff"
        headers["referrer-policy"] = "no-referrer"
        headers["x-frame-options"] = "DENY"
        headers.setdefault("cache-control", "no-store")
        if set_nonce is not None:
            headers.append("set-cookie", self.guard.cookie_header(CSRF_COOKIE, set_nonce))


Handler = Callable[[Request, FormData], Awaitable[Response]]


def post_endpoint(guard: Guard) -> Callable[[Handler], Callable[[Request], Awaitable[Response]]]:
    """Wrap a POST handler: refused when cross-site, or without a valid CSRF token (form field `csrf` or the
    X-CSRF-Token header) unless a bearer token authenticated it. The handler gets the parsed form (a JSON
    body becomes a form of its string values)."""

    def wrap(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            if cross_site(request):
                return _refuse(request, "cross-site request refused")
            form = await read_form(request)
            if not guard.bearer_ok(request):
                submitted = request.headers.get(CSRF_HEADER) or str(form.get(CSRF_FIELD) or "")
                if not guard.csrf_ok(request, submitted):
                    return _refuse(request, "missing or invalid CSRF token; reload the page")
            return await handler(request, form)

        endpoint.__name__ = handler.__name__
        return endpoint

    return wrap


async def read_form(request: Request) -> FormData:
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            data: Any = json.loads(await request.body() or b"{}")
        except ValueError:
            data = {}
        items: list[tuple[str, str | UploadFile]] = []
        if isinstance(data, dict):
            for k, v in data.items():
                for one in (v if isinstance(v, list) else [v]):
                    if isinstance(one, str | int):
                        items.append((str(k), str(one)))
        return FormData(items)
    return await request.form(max_files=0, max_fields=5000)


def _refuse(request: Request, why: str) -> Response:
    if wants_json(request):
        return JSONResponse({"error": why}, 403)
    return PlainTextResponse(why, 403)


async def login_failed_pause() -> None:
    await asyncio.sleep(LOGIN_FAIL_DELAY_S)
