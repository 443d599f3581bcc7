"""Run the sandbox: in a background thread for tests and the embedded mode, or in the foreground for the CLI.

with start_sandbox({"protocols": {"gemini": {"rpm": 60}}}) as sb:
    httpx.post(f"{sb.url}/v1beta/models/gemini-3-pro-image-preview:generateContent", json=...)
    sb.ledger()["billed_images"]
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import uvicorn

from pipeline.sandbox.app import build_app
from pipeline.sandbox.profile import SandboxProfile, load_profile
from pipeline.sandbox.state import SandboxState

log = logging.getLogger(__name__)

ProfileSource = SandboxProfile | dict[str, Any] | str | Path | None
#: how long start_sandbox waits for uvicorn to listen
START_TIMEOUT_S = 10.0
#: how long stop() lets in-flight requests finish (hanging ones are cut)
STOP_GRACE_S = 1


def _config(state: SandboxState, host: str, port: int, log_level: str) -> uvicorn.Config:
    return uvicorn.Config(
        build_app(state=state),
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=STOP_GRACE_S,
        backlog=4096,
        timeout_keep_alive=30,
    )


class SandboxServer:
    """A sandbox on a loopback port in a daemon thread. `url` has no trailing slash."""

    def __init__(self, profile: ProfileSource = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.profile = load_profile(profile)
        self.state = SandboxState(self.profile)
        self.host = host
        self._port = port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self._port}"

    def start(self) -> SandboxServer:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self._port))
        self._port = sock.getsockname()[1]
        self._socket = sock
        server = uvicorn.Server(_config(self.state, self.host, self._port, "warning"))
        self._server = server
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name=f"sandbox-{self._port}", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"sandbox did not start on {self.url}")
            time.sleep(0.01)
        return self

    def ledger(self) -> dict[str, Any]:
        return self.state.ledger.snapshot()

    def reset(self) -> None:
        self.state.reset()

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=STOP_GRACE_S + 5)
        if self._socket is not None:
            self._socket.close()
        self._server = self._thread = self._socket = None

    def __enter__(self) -> SandboxServer:
        return self if self._server is not None else self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def start_sandbox(profile: ProfileSource = None, host: str = "127.0.0.1", port: int = 0) -> SandboxServer:
    """Start a sandbox in a background thread on `port` (0 = a free one) and return it once it listens."""
    return SandboxServer(profile, host, port).start()


def serve_forever(profile: ProfileSource = None, host: str = "127.0.0.1", port: int = 8787) -> None:
    """Serve the sandbox in the foreground until interrupted (`pipeline sandbox`)."""
    state = SandboxState(load_profile(profile))
    log.info("sandbox listening on http://%s:%d", host, port)
    uvicorn.Server(_config(state, host, port, "info")).run()
