"""Budget alerts reach the webhook through the runtime's HTTP client (not a bare httpx.post), once per
threshold, from real settlements against the sandbox."""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from pipeline.clock import utcnow
from pipeline.core.process import Outcome, process_item
from pipeline.core.submit import submit
from pipeline.db.models import Item
from pipeline.sandbox.server import SandboxServer
from tests.core.helpers import job, runtime, settings_for, specs


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    finally:
        server.shutdown()
        server.server_close()


def test_alerts_go_through_the_runtime_client(tmp_path: Path, sandbox: SandboxServer,
                                              webhook: tuple[str, list[dict[str, Any]]]) -> None:
    url, received = webhook
    providers = {"sandbox": {"base_url": sandbox.url, "cost_from_usage": False,
                             "prices": {"1K": "0.134", "2K": "0.134", "4K": "0.24"}}}
    rt = runtime(settings_for(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}", sandbox.url, providers=providers,
                              budget={"alert_webhook_url": url}))
    sent: list[str] = []
    client = httpx.Client(event_hooks={"request": [lambda r: sent.append(str(r.url))]})
    try:
        ctx = dataclasses.replace(rt.ctx, http=client)
        res = submit(rt.sessions, job(max_usd=Decimal("0.268")), specs(3), utcnow())
        with rt.sessions() as s:
            ids = list(s.scalars(select(Item.id).where(Item.job_id == res.job_id).order_by(Item.id)))
        assert [process_item(ctx, i) for i in ids] == [Outcome.SUCCEEDED, Outcome.SUCCEEDED, Outcome.BLOCKED]
        assert [(r["scope"], r["pct"]) for r in received] == [("job test-job", 50), ("job test-job", 100)]
        assert received[-1]["spent_usd"] == "0.27" and received[-1]["cap_usd"] == "0.27"
        assert sent == [url, url]
    finally:
        client.close()
        rt.close()
