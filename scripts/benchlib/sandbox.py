"""A sandbox with a request recorder in front, on a loopback port in a daemon thread (one per run)."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import uvicorn

from benchlib.recorder import RequestRecorder
from pipeline.sandbox.app import build_app
from pipeline.sandbox.profile import load_profile
from pipeline.sandbox.state import SandboxState

#: how long start() waits for uvicorn to listen
START_TIMEOUT_S = 10.0


def gemini_profile(*, rpm: int | None, bucket_s: float = 1.0, min_s: float = 0.0, max_s: float = 0.0,
                   seed: int | None = 7) -> dict[str, Any]:
    """A profile whose Gemini protocol enforces `rpm` as a token bucket of `bucket_s` seconds' worth (None:
    unlimited) with latency uniform in [min_s, max_s]."""
    gemini: dict[str, Any] = {"latency": {"min_s": min_s, "max_s": max_s}}
    if rpm is not None:
        gemini |= {"rpm": rpm, "bucket_s": bucket_s}
    return {"seed": seed, "protocols": {"gemini": gemini}}


class RecordingSandbox:
    def __init__(self, profile: dict[str, Any]) -> None:
        self.profile = profile
        self.state = SandboxState(load_profile(profile))
        self.recorder = RequestRecorder(build_app(state=self.state))
        self.port = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> RecordingSandbox:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self._socket = sock
        config = uvicorn.Config(self.recorder, host="127.0.0.1", port=self.port, log_level="warning",
                                access_log=False, lifespan="off", backlog=4096, timeout_keep_alive=30,
                                timeout_graceful_shutdown=1)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                        name=f"bench-sandbox-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("bench sandbox did not start")
            time.sleep(0.01)
        return self

    def ledger(self) -> dict[str, Any]:
        return self.state.ledger.snapshot()

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._socket is not None:
            self._socket.close()
        self._server = self._thread = self._socket = None

    def __enter__(self) -> RecordingSandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
