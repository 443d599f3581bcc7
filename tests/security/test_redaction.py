"""Key redaction in provider error texts, including the case the secrets scan found: a provider message that
quotes the key is shortened (short_text, 300 characters) before redaction, so the cut could leave the first
part of the key at the end of the message."""

from __future__ import annotations

import base64
from pathlib import Path
from urllib.parse import quote

import pytest

from pipeline.errors import ProviderUnavailable
from pipeline.providers.http import MAX_MESSAGE_CHARS, redact, scrub, short_text
from pipeline.redact import Redactor

KEY = "sk-SENTINEL-0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize("offset", range(MAX_MESSAGE_CHARS - len(KEY) - 5, MAX_MESSAGE_CHARS + 2))
def test_a_key_cut_by_shortening_is_redacted(offset: int) -> None:
    message = short_text("x" * offset + KEY + " and more text after it " * 5)
    err = scrub(ProviderUnavailable(message, provider="p"), KEY)
    assert "SENTINEL" not in err.message and "SENTINEL" not in str(err)
    assert KEY[:4] not in err.message


def test_whole_keys_and_unrelated_text() -> None:
    assert redact(f"a {KEY} b {KEY}", KEY) == "a *** b ***"
    assert redact("nothing secret here...", KEY) == "nothing secret here..."
    assert redact("ends with sk-...", KEY) == "ends with sk-..."  # three characters: too short to mean the key
    assert redact("no key configured", None) == "no key configured"


# -- issue 13, class 10: partial keys, in every case and encoding, everywhere they could be stored or shown -------

PARTS = {
    "prefix-12-ellipsis": KEY[:12] + "...",
    "middle-run-8": KEY[10:18],
    "suffix": KEY[-9:],
    "upper": KEY.upper(),
    "lower": KEY.lower(),
    "base64": base64.b64encode(KEY.encode()).decode(),
    "base64-in-basic-auth": base64.b64encode(f"user:{KEY}".encode()).decode(),
    "base64-urlsafe-offset": base64.urlsafe_b64encode(b"xy" + KEY.encode()).decode(),
    "url-encoded": quote(KEY + "/+=", safe=""),
    "hex": KEY.encode().hex(),
    "hex-upper": KEY.encode().hex().upper(),
}


def _fragments(text: str) -> list[str]:
    """Any 8-character part of the key, in any case, still in `text`."""
    low = text.lower()
    return [KEY[i:i + 8] for i in range(len(KEY) - 7) if KEY[i:i + 8].lower() in low]


@pytest.mark.parametrize("name", sorted(PARTS))
def test_partial_and_encoded_keys_are_redacted(name: str) -> None:
    text = f"provider said: {PARTS[name]} (request 42)"
    out = Redactor([KEY])(text)
    assert out.startswith("provider said: ") and out.endswith(" (request 42)")
    assert "[redacted]" in out
    if name.startswith(("base64", "hex")):
        assert PARTS[name][4:-4] not in out
    else:
        assert _fragments(out) == []


def test_ordinary_text_is_left_alone() -> None:
    text = "Professional product photo of sk-001 on marble, soft light; error 0123 (id abcdef)"
    assert Redactor([KEY])(text) == text
    assert redact(text, KEY) == text


def test_every_log_line_and_the_stored_reason_lose_all_forms(tmp_path: Path) -> None:
    import io
    import logging

    from pipeline.config import load_settings
    from pipeline.logging_setup import configure_logging
    from pipeline.redact import bounded, install

    cfg = tmp_path / "pipeline.yaml"
    cfg.write_text("providers: {sandbox: {api_key_env: REDACT13_KEY}}\n")
    buf = io.StringIO()
    root = logging.getLogger()
    handlers, factory = list(root.handlers), logging.getLogRecordFactory()
    try:
        configure_logging(load_settings(cfg, env={}), stream=buf, env={"REDACT13_KEY": KEY})
        for part in PARTS.values():
            logging.getLogger("pipeline.test").warning("answer %s", part)
        stored = [bounded(f"x {part} y" + "z" * 5000) for part in PARTS.values()]
    finally:
        for h in list(root.handlers):
            if h not in handlers:
                root.removeHandler(h)
        logging.setLogRecordFactory(factory)
        install([])
    text = buf.getvalue()
    assert text.count("[redacted]") >= len(PARTS) and _fragments(text) == []
    assert all(_fragments(s) == [] and len(s) <= 1000 for s in stored)


def test_a_provider_echoing_parts_of_the_key_stores_none_of_them(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A Gemini-shaped 400 whose message quotes the key in part, upper-cased and base64: the item fails, and
    neither its failure reason nor the attempt's detail holds any 8-character part of the key."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import yaml
    from sqlalchemy import select

    from pipeline.clock import utcnow
    from pipeline.config import load_settings
    from pipeline.core.process import process_item
    from pipeline.core.submit import submit
    from pipeline.db.models import Attempt, Item
    from pipeline.redact import install
    from pipeline.runtime import open_runtime
    from tests.core.helpers import job, specs

    echo = " | ".join(PARTS.values()) + " " + "padding " * 2000

    class Echo(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", "0")))
            body = json.dumps({"error": {"code": 400, "status": "INVALID_ARGUMENT",
                                         "message": f"API key not valid: {echo}"}}).encode()
            self.send_response(400)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("REDACT13_KEY", KEY)
    cfg = tmp_path / "pipeline.yaml"
    cfg.write_text(yaml.safe_dump({
        "database_url": f"sqlite:///{tmp_path / 'p.db'}", "storage_url": f"file://{tmp_path / 'out'}",
        "providers": {"sandbox": {"base_url": f"http://127.0.0.1:{server.server_address[1]}",
                                  "api_key_env": "REDACT13_KEY"}}}))
    try:
        rt = open_runtime(load_settings(cfg))
        try:
            res = submit(rt.sessions, job("echo"), specs(1), utcnow())
            with rt.sessions() as s:
                item_id = int(s.scalar(select(Item.id).where(Item.job_id == res.job_id)) or 0)
            process_item(rt.ctx, item_id)
            with rt.sessions() as s:
                reason = s.get_one(Item, item_id).failure_reason or ""
                details = [a.error_detail or "" for a in s.scalars(select(Attempt))]
        finally:
            rt.close()
    finally:
        server.shutdown()
        server.server_close()
        install([])
    assert "API key not valid" in reason and len(reason) <= 1000
    for text in (reason, *details):
        assert _fragments(text) == [], text
