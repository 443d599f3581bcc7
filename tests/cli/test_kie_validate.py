"""Kie.ai takes references only as URLs, at most 8: a manifest Kie could not run is refused up front by
`validate`, `submit` and `run` (exit 2, a message naming the provider and the fix, nothing written)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import create_engine, func, inspect, select
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.db.models import Job
from tests.sandbox.sandbox_helpers import png


def _setup(tmp_path: Path, *, storage: str | None = None, kie: dict[str, Any] | None = None,
           refs: int = 1, providers: list[str] | None = None) -> tuple[Path, Path, str]:
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    cfg = {"database_url": db, "storage_url": storage or f"file://{tmp_path / 'out'}"}
    if kie is not None:
        cfg["providers"] = {"kie": kie}
    (tmp_path / "pipeline.yaml").write_text(yaml.safe_dump(cfg))
    for i in range(refs):
        (tmp_path / f"ref{i}.png").write_bytes(png(16 + i, 16))
    manifest = {"job": "k", "providers": providers or ["kie"], "prompt": "photo of {{ id }}",
                "items": [{"id": "a", "references": [f"ref{i}.png" for i in range(refs)]}]}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(manifest))
    return tmp_path / "pipeline.yaml", tmp_path / "job.yaml", db


def _jobs(db: str) -> int:
    engine = create_engine(db)
    try:
        if "jobs" not in inspect(engine).get_table_names():
            return 0  # not even migrated: nothing was written
        with engine.connect() as c:
            return c.scalar(select(func.count()).select_from(Job)) or 0
    finally:
        engine.dispose()


@pytest.mark.parametrize("command", ["validate", "submit", "run"])
def test_file_storage_without_an_upload_api_is_refused(tmp_path: Path, command: str) -> None:
    cfg, manifest, db = _setup(tmp_path, kie={"upload_base_url": None})
    res = CliRunner().invoke(app, [command, str(manifest), "--config", str(cfg)])
    assert res.exit_code == 2, res.output
    text = " ".join(res.output.split())
    assert "'kie' (Kie.ai) takes references only as URLs" in text
    assert "storage_url to s3://" in text and "providers.kie.upload_base_url" in text and "job.yaml" in text
    assert _jobs(db) == 0


def test_more_references_than_kie_takes_are_refused(tmp_path: Path) -> None:
    cfg, manifest, _ = _setup(tmp_path, refs=9)
    res = CliRunner().invoke(app, ["validate", str(manifest), "--config", str(cfg)])
    assert res.exit_code == 2 and "at most 8 references" in " ".join(res.output.split()), res.output


@pytest.mark.parametrize(("storage", "kie"), [
    (None, None),  # the preset's upload_base_url: Kie's file upload API
    ("s3://some-bucket/prefix", {"upload_base_url": None}),  # presigned URLs
])
def test_a_way_to_pass_references_is_enough(tmp_path: Path, storage: str | None, kie: dict[str, Any] | None) -> None:
    cfg, manifest, _ = _setup(tmp_path, storage=storage, kie=kie)
    res = CliRunner().invoke(app, ["validate", str(manifest), "--config", str(cfg)])
    assert res.exit_code == 0, res.output


def test_jobs_without_references_or_without_kie_are_not_concerned(tmp_path: Path) -> None:
    cfg, manifest, _ = _setup(tmp_path, kie={"upload_base_url": None}, refs=0)
    assert CliRunner().invoke(app, ["validate", str(manifest), "--config", str(cfg)]).exit_code == 0
    cfg, manifest, _ = _setup(tmp_path, kie={"upload_base_url": None}, providers=["replicate"])
    assert CliRunner().invoke(app, ["validate", str(manifest), "--config", str(cfg)]).exit_code == 0
