"""Fixtures for the review app: a finished job on the sandbox (over HTTP), and the app serving it in a thread
on a free loopback port, with or without a token, with or without an in-process worker."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipeline.config import Settings, load_settings
from pipeline.runtime import Runtime, open_runtime
from pipeline.sandbox.server import SandboxServer, start_sandbox
from pipeline.web.server import WebServer, context_for, processing
from tests.reports.conftest import chromium  # noqa: F401 - Debian's chromium, installed when missing
from tests.review.helpers import cli, write_config, write_manifest

#: launch flags for Debian's chromium under Playwright (no downloads, no background traffic)
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
#: item ids and a prompt that would run script if they were ever markup
XSS_ID = "<img src=x onerror=alert(1)>"
SCRIPT_ID = "<script>"
XSS_TITLE = "mug </textarea><script>alert(2)</script>"
ITEMS = [{"id": "a1", "title": "a red kettle", "tags": ["kitchen"]}, {"id": "a2", "title": "a blue kettle"},
         {"id": XSS_ID, "title": XSS_TITLE, "tags": ["sale"]}, {"id": SCRIPT_ID, "title": "a green chair"},
         {"id": "bad", "title": "nope [sandbox:block-prompt]", "resolution": "2K"}]


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    server = start_sandbox({"protocols": {"gemini": {"latency": {"min_s": 0.01, "max_s": 0.03}}}})
    try:
        yield server
    finally:
        server.stop()


@dataclass
class Job:
    tmp: Path
    cfg: Path
    db_url: str
    name: str

    def settings(self, **env: str) -> Settings:
        return load_settings(self.cfg, env=env)


def run_job(tmp: Path, sandbox: SandboxServer, items: list[dict[str, Any]] | None = None, *, name: str = "web",
            db_url: str | None = None, **config: Any) -> Job:
    db_url = db_url or f"sqlite:///{tmp / 'db.sqlite'}"
    cfg = write_config(tmp, db_url, sandbox.url, **config)
    code, _, out = cli("run", write_manifest(tmp, name, items or ITEMS), "--config", cfg)
    assert code in (0, 1), out
    return Job(tmp, cfg, db_url, name)


@pytest.fixture
def job(tmp_path: Path, sandbox: SandboxServer) -> Job:
    return run_job(tmp_path, sandbox)


@contextlib.contextmanager
def serving(settings: Settings, token: str | None = None, *, worker: bool = False) -> Iterator[tuple[str, Runtime]]:
    rt = open_runtime(settings)
    try:
        with processing(rt, worker), WebServer(context_for(rt, token)) as srv:
            yield srv.url, rt
    finally:
        rt.close()


def csrf_of(html: str) -> str:
    m = re.search(r'<meta name="csrf-token" content="([0-9a-f]+)">', html)
    assert m, "no CSRF token on the page"
    return m.group(1)


def browser_client(url: str) -> tuple[httpx.Client, str]:
    """An HTTP client that behaves like a browser on the job page: it has the CSRF cookie and the page's token."""
    c = httpx.Client(base_url=url, timeout=30)
    return c, csrf_of(c.get("/").text)
