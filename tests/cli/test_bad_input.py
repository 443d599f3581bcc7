"""Bad manifests, config and arguments through the CLI: exit code 2, a message naming the place, and
nothing in the database (checked on a migrated Postgres database)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from sqlalchemy import create_engine, func, select
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.db.models import Item, Job

ROOT = Path(__file__).resolve().parents[2]
BAD = ROOT / "tests" / "data" / "manifests" / "bad"
EXPECTED: dict[str, list[str]] = yaml.safe_load((BAD / "expected.yaml").read_text())
PIPELINE = str(Path(sys.executable).parent / "pipeline")


@pytest.fixture
def migrated(tmp_path: Path, pg_url: str) -> tuple[Path, str]:
    cfg = tmp_path / "pipeline.yaml"
    cfg.write_text(yaml.safe_dump({"database_url": pg_url, "storage_url": f"file://{tmp_path / 'out'}"}))
    res = CliRunner().invoke(app, ["db", "upgrade", "--config", str(cfg)])
    assert res.exit_code == 0, res.output
    return cfg, pg_url


def _rows(url: str) -> tuple[int, int]:
    engine = create_engine(url)
    try:
        with engine.connect() as c:
            return (c.scalar(select(func.count()).select_from(Job)) or 0,
                    c.scalar(select(func.count()).select_from(Item)) or 0)
    finally:
        engine.dispose()


def test_corpus_is_large_enough() -> None:
    assert len(EXPECTED) >= 15


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bad_manifest_exit_2_names_place_writes_nothing(name: str, migrated: tuple[Path, str]) -> None:
    cfg, url = migrated
    for command in ("validate", "submit", "run"):
        res = CliRunner().invoke(app, [command, str(BAD / name), "--config", str(cfg)])
        assert res.exit_code == 2, (command, res.output)
        assert "Traceback" not in res.output
        for part in EXPECTED[name]:
            assert part in " ".join(res.output.split()) or part in res.output, (command, part, res.output)
    assert _rows(url) == (0, 0)


def test_bad_config_exit_2(tmp_path: Path) -> None:
    cfg = tmp_path / "pipeline.yaml"
    cfg.write_text("databse_url: sqlite:///x.db\n")
    res = CliRunner().invoke(app, ["providers", "--config", str(cfg)])
    assert res.exit_code == 2 and "databse_url" in res.output


def test_unknown_provider_in_manifest_exit_2(tmp_path: Path) -> None:
    m = tmp_path / "m.yaml"
    m.write_text("job: x\nproviders: [nope]\nprompt: a\nitems: [{id: a}]\n")
    res = CliRunner().invoke(app, ["validate", str(m)])
    assert res.exit_code == 2 and "unknown provider 'nope'" in res.output


def test_contract_smoke_bad_manifest_in_a_subprocess(tmp_path: Path) -> None:
    """As ../shared/checks/contract-smoke does it: a real process, no traceback, exit 2."""
    m = tmp_path / "bad.yaml"
    m.write_text('job: x\nproviders: [sandbox]\nprompt: "a"\nitems:\n  - {id: a, resolution: 9K}\n')
    res = subprocess.run([PIPELINE, "validate", str(m)], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert res.returncode == 2
    assert "Traceback" not in res.stdout + res.stderr
    assert "bad.yaml:5 (item a)" in res.stdout + res.stderr
