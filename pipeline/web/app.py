"""The review app's routes. GET never changes anything; every change is a POST through `post_endpoint`."""

from __future__ import annotations

from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from pipeline.web.actions import Actions
from pipeline.web.context import WebContext
from pipeline.web.media import image_origins
from pipeline.web.pages import Pages
from pipeline.web.security import SecurityMiddleware, post_endpoint

STATIC = Path(__file__).parent / "static"


def build_app(ctx: WebContext) -> Starlette:
    pages = Pages(ctx)
    actions = Actions(ctx, pages)
    post = post_endpoint(ctx.guard)
    routes = [
        Route("/", pages.jobs),
        Route("/jobs/{ref}", pages.job),
        Route("/jobs/{ref}/export.{fmt}", pages.export),
        Route("/jobs/{ref}/review", post(actions.review), methods=["POST"]),
        Route("/jobs/{ref}/prompt", post(actions.prompt), methods=["POST"]),
        Route("/jobs/{ref}/regenerate", post(actions.regenerate), methods=["POST"]),
        Route("/providers", pages.providers),
        Route("/api/jobs", pages.api_jobs),
        Route("/api/jobs/{ref}", pages.api_job),
        Route("/api/providers", pages.api_providers),
        Route("/media/items/{item_id:int}/{kind:str}", pages.item_media),
        Route("/media/history/{output_id:int}/{kind:str}", pages.history_media),
        Route("/login", actions.login_form, methods=["GET"]),
        Route("/login", post(actions.login), methods=["POST"]),
        Route("/logout", post(actions.logout), methods=["POST"]),
        Mount("/static", StaticFiles(directory=str(STATIC)), name="static"),
    ]
    middleware = [Middleware(SecurityMiddleware, guard=ctx.guard, img_origins=image_origins(ctx.storage))]
    return Starlette(routes=routes, middleware=middleware)
