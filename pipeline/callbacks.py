"""Task-API completion callbacks (Kie.ai's callBackUrl): the inbox in the database and the small ASGI app that
fills it (`pipeline callbacks --port N`, behind the deployment's `public_base_url`).

    POST /callbacks/{provider}/{token}    the provider's JSON body -> 200 {"ok": true}
    GET  /health                          200 {"ok": true}

The token (256 random bits) was registered by the adapter before it created the task, so the URL is the only
credential. An unknown token, a provider that does not match, or a body naming another task than the one bound
to the token is refused (404 / 409) and stores nothing; the first accepted body is kept and a repeated delivery
only counts (idempotent). The polling adapter reads the body at its next look and polls as the fallback, so a
lost or forged callback costs nothing. Bodies larger than MAX_BODY_BYTES are refused.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Mapping
from typing import Any

import anyio.to_thread
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pipeline.clock import Clock, utcnow
from pipeline.db.models import TaskCallback

#: largest callback body accepted
MAX_BODY_BYTES = 256 * 1024
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{32,64}$")


def _task_id(body: Mapping[str, Any]) -> str | None:
    data = body.get("data")
    for holder in (data, body):
        if isinstance(holder, Mapping):
            for key in ("taskId", "task_id"):
                value = holder.get(key)
                if isinstance(value, str) and value:
                    return value
    return None


class SqlCallbackInbox:
    """The `CallbackInbox` of pipeline.providers.kie over the task_callbacks table, plus `deliver` for the app."""

    def __init__(self, sessions: sessionmaker[Session], clock: Clock = utcnow) -> None:
        self._sessions = sessions
        self._clock = clock

    def open(self, provider: str) -> str:
        token = secrets.token_urlsafe(32)
        with self._sessions.begin() as s:
            s.add(TaskCallback(token=token, provider=provider, deliveries=0, created_at=self._clock()))
        return token

    def bind(self, token: str, remote_id: str) -> None:
        with self._sessions.begin() as s:
            s.execute(update(TaskCallback).where(TaskCallback.token == token, TaskCallback.remote_id.is_(None))
                      .values(remote_id=remote_id))

    def payload(self, provider: str, remote_id: str) -> dict[str, Any] | None:
        with self._sessions() as s:
            row = s.scalar(select(TaskCallback.payload).where(
                TaskCallback.provider == provider, TaskCallback.remote_id == remote_id,
                TaskCallback.payload.is_not(None)).limit(1))
        return dict(row) if isinstance(row, Mapping) else None

    def deliver(self, provider: str, token: str, body: Mapping[str, Any]) -> tuple[int, str]:
        """Store a delivery. Returns (HTTP status, what happened)."""
        task_id = _task_id(body)
        with self._sessions.begin() as s:
            row = s.get(TaskCallback, token, with_for_update=True)
            if row is None or row.provider != provider:
                return 404, "unknown callback"
            if row.remote_id and task_id and task_id != row.remote_id:
                return 409, "callback for another task"
            row.deliveries += 1
            if row.payload is not None:
                return 200, "duplicate"
            row.payload = dict(body)
            row.received_at = self._clock()
            if not row.remote_id and task_id:
                row.remote_id = task_id
        return 200, "stored"


def build_callback_app(inbox: SqlCallbackInbox) -> Starlette:
    async def receive(request: Request) -> Response:
        provider = str(request.path_params["provider"])
        token = str(request.path_params["token"])
        if not _TOKEN.match(token):
            return JSONResponse({"ok": False, "error": "unknown callback"}, 404)
        raw = await request.body()
        if len(raw) > MAX_BODY_BYTES:
            return JSONResponse({"ok": False, "error": "body too large"}, 413)
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return JSONResponse({"ok": False, "error": "body is not JSON"}, 400)
        if not isinstance(body, dict):
            return JSONResponse({"ok": False, "error": "body is not a JSON object"}, 400)
        status, what = await anyio.to_thread.run_sync(inbox.deliver, provider, token, body)
        return JSONResponse({"ok": status == 200, "result": what}, status)

    async def health(request: Request) -> Response:
        return JSONResponse({"ok": True})

    return Starlette(routes=[Route("/callbacks/{provider}/{token}", receive, methods=["POST"]),
                             Route("/health", health, methods=["GET"])])


def serve_callbacks(database_url: str, host: str, port: int, *, pool_size: int = 5) -> None:
    """Run the receiver in the foreground (`pipeline callbacks`): migrate, then serve until interrupted."""
    import uvicorn

    from pipeline.db.migrate import migrate
    from pipeline.db.session import make_engine, make_sessionmaker

    engine = make_engine(database_url, pool_size=pool_size)
    try:
        migrate(engine)
        app = build_callback_app(SqlCallbackInbox(make_sessionmaker(engine)))
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
    finally:
        engine.dispose()
