"""The sandbox ASGI app: every protocol's routes, each also under /p/{provider_name}/, plus /_sandbox admin.

Admin: `GET /_sandbox/ledger`, `POST /_sandbox/reset`, `GET /_sandbox/health`, `GET /_sandbox/profile`,
`GET /_sandbox/files/{id}` (output images served by URL; not counted in the ledger).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pipeline.sandbox.gemini import GeminiApi
from pipeline.sandbox.gemini_batch import GeminiBatchApi
from pipeline.sandbox.gemini_files import GeminiFiles
from pipeline.sandbox.http import json_response
from pipeline.sandbox.kie import KieApi
from pipeline.sandbox.openai_images import OpenAIImagesApi
from pipeline.sandbox.profile import SandboxProfile
from pipeline.sandbox.replicate import ReplicateApi
from pipeline.sandbox.replicate_files import ReplicateFiles
from pipeline.sandbox.state import SandboxState

PREFIX = "/p/{provider_name}"


class AdminApi:
    def __init__(self, state: SandboxState) -> None:
        self.state = state

    def routes(self) -> list[Route]:
        return [
            Route("/_sandbox/ledger", self.ledger, methods=["GET"]),
            Route("/_sandbox/reset", self.reset, methods=["POST"]),
            Route("/_sandbox/health", self.health, methods=["GET"]),
            Route("/_sandbox/profile", self.profile, methods=["GET"]),
            Route("/_sandbox/files/{blob_id}", self.file, methods=["GET"]),
        ]

    async def ledger(self, request: Request) -> Response:
        return json_response(self.state.ledger.snapshot())

    async def reset(self, request: Request) -> Response:
        self.state.reset()
        return json_response({"ok": True})

    async def health(self, request: Request) -> Response:
        return json_response({"ok": True})

    async def profile(self, request: Request) -> Response:
        return json_response(self.state.profile.model_dump(mode="json"))

    async def file(self, request: Request) -> Response:
        blob_id = str(request.path_params["blob_id"]).split(".", 1)[0]  # ids may carry an extension
        blob = self.state.files.get(blob_id)
        if blob is None:
            return json_response({"detail": "Not found."}, 404)
        return Response(blob.data, media_type=blob.mime_type)


_SHARED = {("/{version}/files", "GET"): "list", ("/{version}/files/{file_action}", "GET"): "get",
           ("/{version}/files/{file_action}", "DELETE"): "delete"}


def _shared_files(route: Route, replicate: ReplicateFiles) -> Route:
    """A Gemini File API route whose path Replicate's files API shares: dispatched by `replicate.claims`."""
    methods = route.methods or set()
    name = next((n for (path, method), n in _SHARED.items() if route.path == path and method in methods), None)
    if name is None:
        return route
    gemini: Callable[[Request], Awaitable[Response]] = route.endpoint
    other: Callable[[Request], Awaitable[Response]] = getattr(replicate, name)

    async def endpoint(request: Request) -> Response:
        return await (other(request) if replicate.claims(request) else gemini(request))

    return Route(route.path, endpoint, methods=[m for m in methods if m != "HEAD"])


def build_app(profile: SandboxProfile | None = None, state: SandboxState | None = None) -> Starlette:
    """The sandbox app over `state` (a fresh one from `profile` when not given)."""
    state = state or SandboxState(profile or SandboxProfile())
    api_routes: list[Route] = []
    gemini = GeminiApi(state)
    files = GeminiFiles(state)
    batch = GeminiBatchApi(state, files)
    gemini.actions["batchGenerateContent"] = batch.create
    api_routes += gemini.routes() + batch.routes() + files.routes()
    replicate_files = ReplicateFiles(state)
    api_routes = [_shared_files(r, replicate_files) for r in api_routes]
    api_routes += OpenAIImagesApi(state).routes() + ReplicateApi(state, replicate_files).routes()
    api_routes += replicate_files.routes() + KieApi(state).routes()
    prefixed = [Route(PREFIX + r.path, r.endpoint, methods=r.methods) for r in api_routes]
    app = Starlette(routes=[*AdminApi(state).routes(), *api_routes, *prefixed])
    app.state.sandbox = state
    return app
