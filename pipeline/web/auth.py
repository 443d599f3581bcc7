"""Who may use the review app, and which requests may change anything.

- Bound to loopback without a token, anyone on this machine may use it. With a token (`serve.token` or
  PIPELINE_SERVE_TOKEN; required off loopback) every page needs it: a login form sets an HttpOnly cookie
  holding an HMAC of the token (never the token itself), and JSON clients send `Authorization: Bearer TOKEN`.
- Every state-changing request is a POST and carries a CSRF token: the page's token is an HMAC, under a
  per-process secret, of a random nonce kept in an HttpOnly SameSite=Strict cookie; a form field or the
  X-CSRF-Token header must match it. A cross-site page can neither read the token nor forge it. A POST
  authenticated by a bearer header (which browsers never add by themselves) needs no CSRF token.
- A POST whose Origin (or Sec-Fetch-Site) says it came from another site is refused whatever it carries.
- Without a token, only loopback host names are accepted in the Host header (DNS rebinding).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from dataclasses import dataclass, field
from http.cookies import SimpleCookie

from starlette.requests import Request

AUTH_COOKIE = "pipeline_auth"
CSRF_COOKIE = "pipeline_csrf"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
#: names a loopback-only app answers to (the Host header, without port)
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")


def is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Guard:
    """The app's credentials: the token (None = open on loopback) and the per-process CSRF secret."""

    token: str | None
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    #: cookies only over https (when the app is reached through an https public_url)
    secure_cookies: bool = False

    # -- authentication --------------------------------------------------------------------------

    def session_value(self) -> str:
        assert self.token is not None
        return hmac.new(self.token.encode(), b"pipeline-serve-session-v1", hashlib.sha256).hexdigest()

    def token_matches(self, given: str) -> bool:
        return self.token is not None and hmac.compare_digest(given.encode(), self.token.encode())

    def bearer_ok(self, request: Request) -> bool:
        auth = request.headers.get("authorization", "")
        scheme, _, value = auth.partition(" ")
        return self.token is not None and scheme.lower() == "bearer" and self.token_matches(value.strip())

    def authenticated(self, request: Request) -> bool:
        if self.token is None:
            return True
        if self.bearer_ok(request):
            return True
        cookie = request.cookies.get(AUTH_COOKIE, "")
        return bool(cookie) and hmac.compare_digest(cookie.encode(), self.session_value().encode())

    # -- CSRF ------------------------------------------------------------------------------------

    def csrf_for(self, nonce: str) -> str:
        return hmac.new(self.secret, nonce.encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, request: Request, submitted: str | None) -> bool:
        nonce = request.cookies.get(CSRF_COOKIE, "")
        if not nonce or not submitted:
            return False
        return hmac.compare_digest(submitted.encode(), self.csrf_for(nonce).encode())

    def cookie_header(self, name: str, value: str, *, max_age: int | None = None) -> str:
        c: SimpleCookie = SimpleCookie()
        c[name] = value
        c[name]["path"] = "/"
        c[name]["httponly"] = True
        c[name]["samesite"] = "Strict"
        if max_age is not None:
            c[name]["max-age"] = max_age
        if self.secure_cookies:
            c[name]["secure"] = True
        return c.output(header="").strip()


def new_nonce() -> str:
    return secrets.token_urlsafe(24)


def cross_site(request: Request) -> bool:
    """True when the browser says the request came from another site (Origin or Sec-Fetch-Site)."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return True
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin == "null"
    host = request.headers.get("host", "")
    return origin.split("://", 1)[-1].rstrip("/") != host
