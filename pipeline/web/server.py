"""Starting the review app: the bind rule (loopback, or a token), the Runtime behind it, and, in the embedded
mode, an in-process worker so that regenerated items are processed by the same command.

    with WebServer(ctx, "127.0.0.1", 0) as srv:   # tests: a thread on a free port
        httpx.get(srv.url + "/")
    serve(settings, host, port)                     # `pipeline serve`: foreground until Ctrl-C
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from types import TracebackType

import uvicorn

from pipeline.config import Settings
from pipeline.errors import InputError
from pipeline.runtime import Runtime
from pipeline.web.app import build_app
from pipeline.web.auth import Guard, is_loopback
from pipeline.web.context import WebContext

log = logging.getLogger("pipeline.web")

#: how long start() waits for uvicorn to listen
START_TIMEOUT_S = 10.0


def check_bind(host: str, settings: Settings) -> str | None:
    """The token the app will require (None: open). Off loopback, no token is an input error: nothing starts."""
    token = settings.serve.token.get_secret_value() if settings.serve.token else None
    if not is_loopback(host) and token is None:
        raise InputError(f"refusing to listen on {host} without a token: set serve.token in the config or "
                         "PIPELINE_SERVE_TOKEN (at least 16 characters), or bind to 127.0.0.1", where="--host")
    return token


def context_for(rt: Runtime, token: str | None) -> WebContext:
    from pipeline.reports.health import provider_health

    public = rt.settings.serve.public_url
    return WebContext(sessions=rt.sessions, storage=rt.storage, settings=rt.settings,
                      guard=Guard(token, secure_cookies=bool(public and public.startswith("https://"))),
                      clock=rt.ctx.clock, health=lambda now: provider_health(rt.ctx, now))


def _config(ctx: WebContext, host: str, port: int, log_level: str) -> uvicorn.Config:
    return uvicorn.Config(build_app(ctx), host=host, port=port, log_level=log_level, access_log=False,
                          lifespan="off", timeout_graceful_shutdown=2, proxy_headers=False, server_header=False)


class WebServer:
    """The app on a port in a daemon thread (tests, and `serve` beside its in-process worker)."""

    def __init__(self, ctx: WebContext, host: str = "127.0.0.1", port: int = 0) -> None:
        self.ctx, self.host, self.port = ctx, host, port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> WebServer:
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        self._socket = sock
        server = uvicorn.Server(_config(self.ctx, self.host, self.port, "warning"))
        self._server = server
        self._thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=f"web-{self.port}",
                                        daemon=True)
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"review app did not start on {self.url}")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._socket is not None:
            self._socket.close()
        self._server = self._thread = self._socket = None

    def __enter__(self) -> WebServer:
        return self if self._server is not None else self.start()

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


@contextlib.contextmanager
def processing(rt: Runtime, enabled: bool) -> Iterator[None]:
    """An in-process worker (Celery threads pool) with the dispatcher, sweeper and notifications, while the app
    runs: what processes regenerated items in the embedded mode."""
    if not enabled:
        yield
        return
    from pipeline.processing import processing_loop

    conc = rt.settings.worker.concurrency
    with processing_loop(rt, max_queued=min(rt.settings.worker.max_queued, conc * 2), consume_here=conc):
        yield


def serve(rt: Runtime, host: str, port: int, token: str | None, *, worker: bool,
          on_ready: Callable[[str], None] | None = None) -> None:
    """Serve in the foreground until interrupted."""
    ctx = context_for(rt, token)
    with processing(rt, worker):
        server = uvicorn.Server(_config(ctx, host, port, "warning"))
        if on_ready is not None:
            shown = f"[{host}]" if ":" in host else host
            on_ready(f"http://{shown}:{port}")
        server.run()
