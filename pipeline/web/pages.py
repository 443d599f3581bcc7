"""The app's GET handlers: the jobs page, a job's page (and its gallery fragment), the providers page, media,
the JSON the pages poll for live progress, and the exports. Database work runs in the thread pool."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import jinja2
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse

from pipeline.core.control import find_job
from pipeline.db.models import Item, ItemOutput, Job
from pipeline.errors import InputError
from pipeline.money import show
from pipeline.reports.queries import job_summary
from pipeline.reports.render import error_classes, pct, secs
from pipeline.review import export as exporting
from pipeline.review.gallery import PER_PAGE, Filters, gallery
from pipeline.review.state import WITH_IMAGE
from pipeline.web.context import WebContext
from pipeline.web.media import media_response, not_found
from pipeline.web.queries import JOBS_PER_PAGE, job_rows

T = TypeVar("T")
TEMPLATES = Path(__file__).parent / "templates"
#: zip exports are built in a temporary file; this much stays in memory before it spills to disk
ZIP_MEMORY_BYTES = 32 * 1024 * 1024


def make_env() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["usd"] = lambda v: f"${v:,.2f}"  # cents on the page; the exact amount is in title= and JSON
    env.filters["exact"] = show
    env.filters["pct"] = pct
    env.filters["secs"] = secs
    env.filters["errors"] = error_classes
    return env


def _int(v: str | None, default: int) -> int:
    try:
        return max(1, int(v or default))
    except ValueError:
        return default


class Pages:
    def __init__(self, ctx: WebContext) -> None:
        self.ctx = ctx
        self.env = make_env()

    # -- helpers ---------------------------------------------------------------------------------

    def render(self, request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        html = self.env.get_template(name).render(csrf=request.state.csrf_token, token_auth=bool(self.ctx.guard.token),
                                                  path=request.url.path, **context)
        return HTMLResponse(html, status)

    async def db(self, fn: Callable[[], T]) -> T:
        return await run_in_threadpool(fn)

    def _job(self, ref: str) -> Job | None:
        with self.ctx.sessions() as s:
            try:
                return find_job(s, ref)
            except InputError:
                return None

    async def missing(self, request: Request, what: str) -> Response:
        if "application/json" in request.headers.get("accept", "") or request.url.path.startswith("/api/"):
            return JSONResponse({"error": f"no such {what}"}, 404)
        return self.render(request, "missing.html", 404, what=what)

    # -- pages -----------------------------------------------------------------------------------

    async def jobs(self, request: Request) -> Response:
        page = _int(request.query_params.get("page"), 1)
        rows, total = await self.db(lambda: self._rows(page))
        pages = max(1, -(-total // JOBS_PER_PAGE))
        return self.render(request, "jobs.html", rows=rows, page=page, pages=pages, total=total)

    def _rows(self, page: int) -> tuple[list[Any], int]:
        with self.ctx.sessions() as s:
            return job_rows(s, page=page)

    async def job(self, request: Request) -> Response:
        ref = request.path_params["ref"]
        params = dict(request.query_params)
        filters = Filters.parse(params)
        page = _int(params.get("page"), 1)
        per_page = _int(params.get("per_page"), PER_PAGE)

        def load() -> tuple[Any, ...] | None:
            with self.ctx.sessions() as s:
                try:
                    job = find_job(s, ref)
                except InputError:
                    return None
                return job, job_summary(s, job), gallery(s, job.id, filters, page=page, per_page=per_page)

        got = await self.db(load)
        if got is None:
            return await self.missing(request, "job")
        job, summary, gal = got
        context = {"job": job, "summary": summary, "gallery": gal, "filters": filters,
                   "query": filters.as_params(), "back": str(request.url.path) + (f"?{request.url.query}"
                                                                                   if request.url.query else "")}
        if params.get("fragment") == "gallery":
            return self.render(request, "_gallery.html", **context)
        return self.render(request, "job.html", **context)

    async def providers(self, request: Request) -> Response:
        rows, note = await self.db(lambda: self.ctx.health(self.ctx.clock()))
        name = "_providers.html" if request.query_params.get("fragment") == "table" else "providers.html"
        return self.render(request, name, rows=rows, note=note, embedded=self.ctx.settings.embedded)

    # -- JSON the pages poll -----------------------------------------------------------------------

    async def api_jobs(self, request: Request) -> Response:
        raw = request.query_params.get("ids")
        ids = [int(x) for x in raw.split(",") if x.strip().isdigit()] if raw else None

        def load() -> list[dict[str, Any]]:
            with self.ctx.sessions() as s:
                rows, _ = job_rows(s, ids=ids) if ids is not None else job_rows(s)
                return [r.as_json() for r in rows]

        return JSONResponse({"jobs": await self.db(load)})

    async def api_job(self, request: Request) -> Response:
        ref = request.path_params["ref"]

        def load() -> dict[str, Any] | None:
            with self.ctx.sessions() as s:
                try:
                    job = find_job(s, ref)
                except InputError:
                    return None
                return job_summary(s, job).as_json()

        obj = await self.db(load)
        return await self.missing(request, "job") if obj is None else JSONResponse(obj)

    async def api_providers(self, request: Request) -> Response:
        rows, note = await self.db(lambda: self.ctx.health(self.ctx.clock()))
        return JSONResponse({"providers": [h.as_json() for h in rows], "note": note})

    # -- media -----------------------------------------------------------------------------------

    async def item_media(self, request: Request) -> Response:
        item_id, kind = int(request.path_params["item_id"]), request.path_params["kind"]

        def key() -> str | None:
            with self.ctx.sessions() as s:
                row = s.execute(select(Item.state, Item.stored_url, Item.output_key, Item.thumb_key)
                                .where(Item.id == item_id)).first()
            if row is None or row.state not in WITH_IMAGE or row.stored_url is None:
                return None
            return str(row.thumb_key) if kind == "thumb" and row.thumb_key else str(row.output_key)

        return await self.db(lambda: media_response(self.ctx.storage, key()))

    async def history_media(self, request: Request) -> Response:
        output_id, kind = int(request.path_params["output_id"]), request.path_params["kind"]

        def key() -> str | None:
            with self.ctx.sessions() as s:
                row = s.execute(select(ItemOutput.object_key, ItemOutput.thumb_key)
                                .where(ItemOutput.id == output_id)).first()
            if row is None:
                return None
            return str(row.thumb_key) if kind == "thumb" and row.thumb_key else str(row.object_key)

        return await self.db(lambda: media_response(self.ctx.storage, key()))

    # -- exports ---------------------------------------------------------------------------------

    async def export(self, request: Request) -> Response:
        ref, fmt = request.path_params["ref"], request.path_params["fmt"]
        if fmt not in ("csv", "json", "zip"):
            return not_found()

        def load() -> tuple[Job, list[exporting.ExportRow]] | None:
            with self.ctx.sessions() as s:
                try:
                    job = find_job(s, ref)
                except InputError:
                    return None
                return job, list(exporting.approved_rows(s, job.id))

        got = await self.db(load)
        if got is None:
            return await self.missing(request, "job")
        job, rows = got
        name = f"{job.name}-approved.{fmt}"
        disposition = {"content-disposition": f'attachment; filename="{name}"'}
        if fmt == "csv":
            return Response(exporting.csv_text(rows), media_type="text/csv; charset=utf-8", headers=disposition)
        if fmt == "json":
            return JSONResponse(exporting.manifest_json(job, rows, self.ctx.clock()), headers=disposition)
        spool = await self.db(lambda: self._zip(job, rows))
        return StreamingResponse(_chunks(spool), media_type="application/zip", headers=disposition)

    def _zip(self, job: Job, rows: list[exporting.ExportRow]) -> Any:
        spool = tempfile.SpooledTemporaryFile(max_size=ZIP_MEMORY_BYTES)  # noqa: SIM115 - closed by _chunks
        exporting.write_zip(self.ctx.storage, job, rows, spool, self.ctx.clock())
        spool.seek(0)
        return spool


def _chunks(f: Any, size: int = 1 << 16) -> Iterator[bytes]:
    try:
        while chunk := f.read(size):
            yield chunk
    finally:
        f.close()
