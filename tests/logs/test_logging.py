"""Structured logs: one JSON object a line with job and item ids while an item is processed, and never a key
(a sentinel key is planted in messages, arguments, tracebacks and a real run)."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import yaml

from pipeline.clock import utcnow
from pipeline.config import Settings, load_settings
from pipeline.core.process import Outcome, process_item
from pipeline.core.submit import submit
from pipeline.logging_setup import REDACTED, RedactFilter, configure_logging, log_context
from pipeline.runtime import open_runtime
from pipeline.sandbox.server import SandboxServer, start_sandbox
from tests.core.helpers import job, specs

SENTINEL = "sk-SENTINEL-0123456789abcdef/+="
KEY_ENV = "LOGTEST_PROVIDER_KEY"
PIPELINE = str(Path(sys.executable).parent / "pipeline")


def _settings(tmp: Path, fmt: str, **extra: Any) -> Settings:
    cfg = {"log_format": fmt, "log_level": "INFO", "storage_url": f"file://{tmp / 'out'}",
           "database_url": f"sqlite:///{tmp / 'db.sqlite'}",
           "providers": {"sandbox": {"api_key_env": KEY_ENV, "auth": "bearer"}}, **extra}
    path = tmp / "pipeline.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return load_settings(path, env={})


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level, factory = list(root.handlers), root.level, logging.getLogRecordFactory()
    engine_level = logging.getLogger("sqlalchemy.engine").level
    try:
        yield
    finally:
        for h in list(root.handlers):
            if h not in handlers:
                root.removeHandler(h)
        root.setLevel(level)
        logging.getLogger("sqlalchemy.engine").setLevel(engine_level)
        logging.captureWarnings(False)
        logging.setLogRecordFactory(factory)


def _lines(buf: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buf.getvalue().splitlines()]


def test_json_lines_carry_time_level_logger_message_and_ids(tmp_path: Path, restore_logging: None) -> None:
    buf = io.StringIO()
    configure_logging(_settings(tmp_path, "json"), stream=buf, env={})
    log = logging.getLogger("pipeline.test")
    log.info("before %s", "anything")
    with log_context(job_id=7, item_id=42):
        log.warning("inside, %d%% done", 50)
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed")
    log.info("after")
    before, inside, failed, after = _lines(buf)
    assert set(before) == {"time", "level", "logger", "message"}
    assert (before["level"], before["logger"], before["message"]) == ("INFO", "pipeline.test", "before anything")
    assert before["time"].endswith("Z")
    assert (inside["message"], inside["job_id"], inside["item_id"], inside["level"]) == ("inside, 50% done", 7, 42,
                                                                                       "WARNING")
    assert failed["item_id"] == 42 and "ValueError: boom" in failed["exc"]
    assert "job_id" not in after and "item_id" not in after


def test_text_lines_name_the_job_and_item(tmp_path: Path, restore_logging: None) -> None:
    buf = io.StringIO()
    configure_logging(_settings(tmp_path, "text"), stream=buf, env={})
    with log_context(job_id=3, item_id=17):
        logging.getLogger("pipeline.test").warning("slow")
    assert buf.getvalue().rstrip().endswith("WARNING pipeline.test: slow [job 3 item 17]")


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_a_key_never_reaches_the_log(tmp_path: Path, fmt: str, restore_logging: None,
                                     caplog: pytest.LogCaptureFixture) -> None:
    buf = io.StringIO()
    configure_logging(_settings(tmp_path, fmt), stream=buf, env={KEY_ENV: SENTINEL})
    log = logging.getLogger("pipeline.providers.test")
    log.warning("request failed with key %s", SENTINEL)
    log.warning(f"header Authorization: Bearer {SENTINEL}")
    log.warning("url %s", f"https://example.com/v1?key={quote(SENTINEL, safe='')}")
    log.warning("mapping %(k)s", {"k": SENTINEL})
    try:
        raise RuntimeError(f"auth failed for {SENTINEL}")
    except RuntimeError:
        log.exception("call crashed")
    log.warning("stack", stack_info=True, extra={"note": SENTINEL})
    text = buf.getvalue()
    assert SENTINEL not in text and quote(SENTINEL, safe="") not in text
    assert SENTINEL not in caplog.text  # other handlers (here pytest's) get redacted records too
    assert text.count(REDACTED) >= 5
    if fmt == "json":
        assert all(isinstance(json.loads(line), dict) for line in text.splitlines() if line.startswith("{"))


def test_redaction_survives_arguments_that_do_not_fit_the_format() -> None:
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "bad args %s", (SENTINEL, SENTINEL), None)
    assert RedactFilter([SENTINEL]).filter(record)
    assert SENTINEL not in record.getMessage() and REDACTED in record.getMessage()


def test_processing_an_item_logs_with_its_ids(tmp_path: Path, restore_logging: None,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, SENTINEL)
    sandbox = start_sandbox({"protocols": {"gemini": {"latency": {"min_s": 0.01, "max_s": 0.02}}}})
    try:
        settings = _settings(tmp_path, "json", providers={"sandbox": {"api_key_env": KEY_ENV, "auth": "bearer",
                                                                      "base_url": sandbox.url}})
        rt = open_runtime(settings)
        try:
            res = submit(rt.sessions, job("logged"), specs(1), utcnow())
            with rt.sessions() as s:
                from sqlalchemy import select

                from pipeline.db.models import Item

                item_id = s.scalar(select(Item.id))
            buf = io.StringIO()
            configure_logging(settings, stream=buf)
            logging.getLogger("sqlalchemy.engine").setLevel(logging.INFO)  # every statement is a log line
            assert process_item(rt.ctx, int(item_id)) == Outcome.SUCCEEDED
            logging.getLogger("sqlalchemy.engine").setLevel(logging.WARNING)
        finally:
            rt.close()
        assert _key_seen_by(sandbox)
    finally:
        sandbox.stop()
    lines = _lines(buf)
    tagged = [x for x in lines if x.get("item_id") == item_id]
    # the claim's own statements come before the job is known; every line after it names the job too
    assert len([x for x in tagged if x.get("job_id") == res.job_id]) >= 5
    assert all(x.get("job_id") in (None, res.job_id) for x in tagged)
    assert not [x for x in lines if "job_id" in x and "item_id" not in x]
    assert SENTINEL not in buf.getvalue()


def _key_seen_by(sandbox: SandboxServer) -> bool:
    """The key was really sent (so a leak was possible): the sandbox counted an authenticated request."""
    return int(sandbox.ledger()["requests"]) >= 1


def test_a_real_run_logs_json_lines_only_and_no_key(tmp_path: Path) -> None:
    (tmp_path / "job.yaml").write_text(yaml.safe_dump({
        "job": "logged-run", "providers": ["sandbox"], "prompt": "A {{ id }} [sandbox:503x1]",
        "items": [{"id": "a"}, {"id": "b"}, {"id": "c", "prompt": "refused [sandbox:block-prompt]"}]}))
    (tmp_path / "pipeline.yaml").write_text(yaml.safe_dump({
        "providers": {"sandbox": {"api_key_env": KEY_ENV, "auth": "bearer"}},
        "worker": {"backoff_base_s": 0.05, "backoff_cap_s": 0.1}}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
    env.update({KEY_ENV: SENTINEL, "PIPELINE_LOG_FORMAT": "json", "PIPELINE_LOG_LEVEL": "DEBUG"})
    res = subprocess.run([PIPELINE, "run", "job.yaml", "--json"], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 1, res.stderr[-3000:]  # one item failed (blocked prompt)
    assert json.loads(res.stdout)["counts"]["succeeded"] == 2
    lines = res.stderr.splitlines()
    assert len(lines) > 5
    for line in lines:
        obj = json.loads(line)
        assert {"time", "level", "logger", "message"} <= set(obj), line
    assert SENTINEL not in res.stderr + res.stdout
