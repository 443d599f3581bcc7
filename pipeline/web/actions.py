"""The app's POST handlers (each wrapped by security.post_endpoint: CSRF checked): approve / reject / clear,
edit a prompt, regenerate the rejected items, log in and out. Each answers JSON to scripts (Accept:
application/json) and redirects browsers without JavaScript back to the page they came from."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from pipeline.errors import InputError, PipelineError
from pipeline.review.regenerate import regenerate_rejected
from pipeline.review.state import review, set_prompt
from pipeline.web.auth import AUTH_COOKIE
from pipeline.web.context import WebContext
from pipeline.web.pages import Pages
from pipeline.web.security import login_failed_pause, wants_json

#: the auth cookie's lifetime
SESSION_S = 12 * 3600


def safe_back(value: str | None, default: str = "/") -> str:
    """A redirect target from a form: a path on this site only (no scheme, no host, no //)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value or "\n" in value:
        return default
    return value


class Actions:
    def __init__(self, ctx: WebContext, pages: Pages) -> None:
        self.ctx = ctx
        self.pages = pages

    def _answer(self, request: Request, form: FormData, result: dict[str, Any], status: int = 200) -> Response:
        if wants_json(request):
            return JSONResponse(result, status)
        back = safe_back(str(form.get("back") or ""), f"/jobs/{request.path_params.get('ref', '')}")
        if status >= 400:
            sep = "&" if "?" in back else "?"
            back += f"{sep}error={quote(str(result.get('error', ''))[:300])}"
        return RedirectResponse(back, 303)

    async def _run(self, request: Request, form: FormData, fn: Callable[[], dict[str, Any]]) -> Response:
        try:
            result = await run_in_threadpool(fn)
        except InputError as e:
            return self._answer(request, form, {"ok": False, "error": str(e)}, 404 if "no such job" in e.message
                                else 400)
        except PipelineError as e:
            return self._answer(request, form, {"ok": False, "error": str(e)}, 500)
        return self._answer(request, form, {"ok": True, **result})

    async def review(self, request: Request, form: FormData) -> Response:
        ref = request.path_params["ref"]
        action = str(form.get("action") or "")
        keys = [str(v) for v in form.getlist("items") if str(v).strip()]
        note = str(form.get("note") or "") or None
        if action not in ("approve", "reject", "clear"):
            return self._answer(request, form, {"ok": False, "error": "action must be approve, reject or clear"}, 400)
        if not keys:
            return self._answer(request, form, {"ok": False, "error": "no items selected"}, 400)

        def go() -> dict[str, Any]:
            res = review(self.ctx.sessions, ref, self.ctx.clock(), note=note if action != "clear" else None,
                         **{action: keys})
            n = len(res.approved) + len(res.rejected) + len(res.cleared)
            done = {"approve": "approved", "reject": "rejected", "clear": "back to unreviewed"}[action]
            return {"message": f"{n} item{'s' if n != 1 else ''} {done}", "items": keys, "action": action}

        return await self._run(request, form, go)

    async def prompt(self, request: Request, form: FormData) -> Response:
        ref = request.path_params["ref"]
        key = str(form.get("item") or "")
        text = str(form.get("prompt") or "")

        def go() -> dict[str, Any]:
            set_prompt(self.ctx.sessions, ref, key, text, self.ctx.clock())
            return {"message": f"prompt of {key} saved; it is used when the item is regenerated", "item": key}

        return await self._run(request, form, go)

    async def regenerate(self, request: Request, form: FormData) -> Response:
        ref = request.path_params["ref"]

        def go() -> dict[str, Any]:
            res = regenerate_rejected(self.ctx.sessions, self.ctx.storage, ref, self.ctx.clock())
            n = len(res.keys)
            return {"message": f"{n} rejected item{'s' if n != 1 else ''} regenerating ({res.edited} with an edited "
                               f"prompt); the old images are kept in their history" if n else
                               "no rejected items to regenerate", "items": list(res.keys), "kept": res.kept,
                    "edited": res.edited}

        return await self._run(request, form, go)

    # -- login -----------------------------------------------------------------------------------

    async def login_form(self, request: Request) -> Response:
        nxt = safe_back(request.query_params.get("next"))
        return self.pages.render(request, "login.html", next=nxt, error=None)

    async def login(self, request: Request, form: FormData) -> Response:
        nxt = safe_back(str(form.get("next") or ""))
        guard = self.ctx.guard
        if guard.token is None:
            return RedirectResponse(nxt, 303)
        if not guard.token_matches(str(form.get("token") or "")):
            await login_failed_pause()
            return self.pages.render(request, "login.html", 401, next=nxt, error="wrong token")
        res = RedirectResponse(nxt, 303)
        res.headers.append("set-cookie", guard.cookie_header(AUTH_COOKIE, guard.session_value(), max_age=SESSION_S))
        return res

    async def logout(self, request: Request, form: FormData) -> Response:
        res = RedirectResponse("/login", 303)
        res.headers.append("set-cookie", self.ctx.guard.cookie_header(AUTH_COOKIE, "", max_age=0))
        return res
