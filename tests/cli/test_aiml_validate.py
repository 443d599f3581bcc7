"""AIML API gets references inline as data URLs up to 5 MiB and larger ones as presigned S3 URLs: with file storage
`validate`, `submit` and `run` refuse a larger reference up front (exit 2, a message naming the provider and the
fix, nothing written); with S3 storage the same manifest is valid."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.presets import AIML_MAX_INLINE_REFERENCE_BYTES
from tests.cli.test_kie_validate import _jobs


def _setup(tmp_path: Path, storage: str) -> tuple[Path, Path, str]:
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    (tmp_path / "pipeline.yaml").write_text(yaml.safe_dump({"database_url": db, "storage_url": storage}))
    side = 1400  # noise does not compress: about 5.9 MB of PNG
    buf = io.BytesIO()
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(buf, format="PNG")
    (tmp_path / "big.png").write_bytes(buf.getvalue())
    assert len(buf.getvalue()) > AIML_MAX_INLINE_REFERENCE_BYTES
    manifest = {"job": "a", "providers": ["aimlapi"], "prompt": "photo of {{ id }}",
                "items": [{"id": "mug", "references": ["big.png"]}]}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(manifest))
    return tmp_path / "pipeline.yaml", tmp_path / "job.yaml", db


@pytest.mark.parametrize("command", ["validate", "submit", "run"])
def test_a_large_reference_with_file_storage_is_refused(tmp_path: Path, command: str) -> None:
    cfg, manifest, db = _setup(tmp_path, f"file://{tmp_path / 'out'}")
    res = CliRunner().invoke(app, [command, str(manifest), "--config", str(cfg)])
    assert res.exit_code == 2, res.output
    text = " ".join(res.output.split())
    assert "item mug: provider aimlapi gets references inline as data URLs up to" in text
    assert "set storage_url to s3://" in text and "job.yaml" in text
    assert _jobs(db) == 0


def test_the_same_manifest_is_valid_with_s3_storage(tmp_path: Path) -> None:
    cfg, manifest, _ = _setup(tmp_path, "s3://some-bucket/prefix")
    res = CliRunner().invoke(app, ["validate", str(manifest), "--config", str(cfg)])
    assert res.exit_code == 0, res.output
