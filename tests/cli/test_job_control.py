"""Job control through the CLI on the embedded default: every rerun form, resubmission counts, pause,
resume and cancel; the sandbox's ledger says what was paid."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.sandbox.server import SandboxServer, start_sandbox


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    server = start_sandbox({"protocols": {"gemini": {"latency": {"min_s": 0.01, "max_s": 0.05}}}})
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def setup(tmp_path: Path, sandbox: SandboxServer) -> tuple[Path, Path]:
    cfg = tmp_path / "pipeline.yaml"
    cfg.write_text(yaml.safe_dump({
        "database_url": f"sqlite:///{tmp_path / 'db.sqlite'}", "storage_url": f"file://{tmp_path / 'out'}",
        "providers": {"sandbox": {"base_url": sandbox.url}},
        "worker": {"max_attempts": 2, "backoff_base_s": 0.05, "backoff_cap_s": 0.1, "concurrency": 4}}))
    return cfg, tmp_path


def _manifest(tmp: Path, prompts: dict[str, str]) -> Path:
    path = tmp / "job.yaml"
    path.write_text(yaml.safe_dump({"job": "ctl", "providers": ["sandbox"], "prompt": "{{ text }}",
                                    "defaults": {"resolution": "1K"},
                                    "items": [{"id": k, "text": v} for k, v in prompts.items()]}))
    return path


def cli(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(app, list(args))
    return res.exit_code, res.output


def test_rerun_forms_and_resubmission(setup: tuple[Path, Path], sandbox: SandboxServer) -> None:
    cfg, tmp = setup
    prompts = {"a": "apple", "b": "banana", "bad": "nope [sandbox:block-prompt]"}
    code, out = cli("run", str(_manifest(tmp, prompts)), "--config", str(cfg))
    assert code == 1 and "prompt blocked" in out  # one item failed: exit 1, its reason shown
    assert sandbox.ledger()["billed_images"] == 2

    code, out = cli("rerun", "ctl", "--failed", "--config", str(cfg))
    assert "1 items back to pending" in out and code == 1  # blocked again: never paid
    assert sandbox.ledger()["billed_images"] == 2

    code, out = cli("rerun", "ctl", "--items", "a", "--config", str(cfg))
    assert code == 1 and "1 items back to pending" in out  # exit 1: the job still has a failed item
    assert sandbox.ledger()["billed_images"] == 2  # answered from the cache

    code, out = cli("rerun", "ctl", "--items", "zzz", "--config", str(cfg))
    assert code == 2 and "zzz" in out

    code, out = cli("rerun", "ctl", "--all", "--force", "--config", str(cfg))
    assert "3 items back to pending" in out
    assert sandbox.ledger()["billed_images"] == 4  # --force bypasses the cache and pays again

    code, out = cli("rerun", "ctl", "--force", "--config", str(cfg))
    assert code == 2 and "--force needs --all or --items" in out

    # the same manifest again, with one prompt edited and one item added
    prompts.update({"b": "blueberry", "c": "cherry"})
    code, out = cli("run", str(_manifest(tmp, prompts)), "--config", str(cfg))
    assert "1 cached, 1 new, 1 changed" in " ".join(out.split())
    assert sandbox.ledger()["billed_images"] == 6  # only the changed and the new one


def test_pause_resume_cancel(setup: tuple[Path, Path], sandbox: SandboxServer) -> None:
    cfg, tmp = setup
    manifest = _manifest(tmp, {f"i{n}": f"thing {n}" for n in range(4)})
    code, out = cli("submit", str(manifest), "--config", str(cfg))
    assert code == 0
    job_id = out.strip().splitlines()[0]
    assert cli("pause", job_id, "--config", str(cfg))[0] == 0
    code, out = cli("status", job_id, "--json", "--config", str(cfg))
    assert '"state": "paused"' in out
    # a paused job is not dispatched: nothing is called
    from pipeline.config import load_settings
    from pipeline.core.dispatch import dispatch_once
    from pipeline.runtime import open_runtime

    rt = open_runtime(load_settings(cfg, env={}))
    try:
        from pipeline.clock import utcnow

        assert dispatch_once(rt.sessions, lambda ids: None, utcnow(), max_queued=100) == 0
        assert cli("resume", job_id, "--config", str(cfg))[0] == 0
        published: list[int] = []
        assert dispatch_once(rt.sessions, published.extend, utcnow(), max_queued=2) == 2
        code, out = cli("cancel", job_id, "--config", str(cfg))
        assert code == 0 and "cancelled, 4 items not started" in out  # 2 queued + 2 pending: none started
        code, out = cli("status", job_id, "--json", "--config", str(cfg))
        assert '"state": "cancelled"' in out and '"cancelled": 4' in out
    finally:
        rt.close()
    assert sandbox.ledger()["requests"] == 0
