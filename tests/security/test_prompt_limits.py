"""Issue 13, class 2: no silent prompt truncation.

Before: any rendered piece over about 65 KB (2 x MAX_PROMPT_CHARS + 1024) was dropped while streaming, so a 1 MB
template variable validated and the run paid for "Photo of"; `{{ range(100000)|list|string }}` was reported as
"renders empty". Now a rendered prompt over MAX_PROMPT_CHARS (32,000, documented in the README) is refused at
validate and submit with exit 2 naming the item, and what is sent is exactly what was validated: measured here
at the wire, through a recording proxy in front of the sandbox.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import select

from pipeline.clock import utcnow
from pipeline.config import load_settings
from pipeline.core.process import Outcome, process_item
from pipeline.db.models import Item
from pipeline.errors import InputError
from pipeline.manifest import MAX_PROMPT_CHARS, validate_manifest
from pipeline.manifest.templates import TemplateRenderer
from pipeline.runtime import open_runtime
from pipeline.sandbox.server import SandboxServer, start_sandbox
from pipeline.services import load, submit


class Recorder:
    """An HTTP proxy that keeps every request body it forwards to `upstream`."""

    def __init__(self, upstream: str) -> None:
        self.bodies: list[dict[str, Any]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                recorder.bodies.append(json.loads(body))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                resp = httpx.post(upstream + self.path, content=body, headers=headers, timeout=30)
                self.send_response(resp.status_code)
                self.send_header("content-type", resp.headers.get("content-type", "application/json"))
                self.send_header("content-length", str(len(resp.content)))
                self.end_headers()
                self.wfile.write(resp.content)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    server = start_sandbox({"protocols": {"gemini": {"latency": {"min_s": 0.01, "max_s": 0.02}}}})
    try:
        yield server
    finally:
        server.stop()


def _manifest(tmp_path: Path, title: str, prompt: str = "Photo of {{ title }}") -> Path:
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump({"job": "long", "providers": ["sandbox"], "prompt": prompt,
                                    "items": [{"id": "a", "title": title}]}))
    return path


@pytest.mark.parametrize("size", [MAX_PROMPT_CHARS - len("Photo of ") + 1, 70_000, 1_000_000])
def test_over_the_maximum_is_refused_naming_the_item(tmp_path: Path, size: int) -> None:
    with pytest.raises(InputError) as info:
        validate_manifest(_manifest(tmp_path, "x" * size))
    # safe_dump sorts the keys: the items come first, on line 2
    assert info.value.where is not None and info.value.where.endswith("m.yaml:2 (item a)")
    assert f"longer than {MAX_PROMPT_CHARS} characters" in info.value.message


def test_range_string_says_too_long_not_empty(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=f"longer than {MAX_PROMPT_CHARS} characters") as info:
        validate_manifest(_manifest(tmp_path, "x", prompt="{{ range(100000)|list|string }}"))
    assert "empty" not in info.value.message


@pytest.mark.parametrize("prompt", [
    "Photo of {{ title }}",                       # one piece larger than the limit
    "{% for i in range(40) %}{{ title }}{% endfor %}",  # many pieces that add up past it
    "{{ title }}{{ title }}",
])
def test_no_prefix_survives_a_long_render(prompt: str) -> None:
    with pytest.raises(InputError, match="longer than"):
        TemplateRenderer().render(prompt, {"title": "y" * 40_000}, what="prompt", where="x")


def test_what_is_sent_is_exactly_what_was_validated(tmp_path: Path, sandbox: SandboxServer) -> None:
    title = "".join(chr(0x61 + i % 26) for i in range(MAX_PROMPT_CHARS - len("Photo of ")))
    manifest = _manifest(tmp_path, title)
    validated = validate_manifest(manifest).items[0].prompt
    assert len(validated) == MAX_PROMPT_CHARS and validated.endswith(title[-20:])
    proxy = Recorder(sandbox.url)
    try:
        cfg = tmp_path / "pipeline.yaml"
        cfg.write_text(yaml.safe_dump({"database_url": f"sqlite:///{tmp_path / 'p.db'}",
                                       "storage_url": f"file://{tmp_path / 'out'}",
                                       "providers": {"sandbox": {"base_url": proxy.url}}}))
        settings = load_settings(cfg, env={})
        loaded = load(manifest, settings)
        rt = open_runtime(settings)
        try:
            res = submit(rt, loaded, utcnow())
            with rt.sessions() as s:
                item = s.scalars(select(Item).where(Item.job_id == res.job_id)).one()
            assert item.prompt == validated
            assert process_item(rt.ctx, item.id) == Outcome.SUCCEEDED
        finally:
            rt.close()
    finally:
        proxy.close()
    [body] = proxy.bodies
    assert body["contents"][0]["parts"][0]["text"] == validated
