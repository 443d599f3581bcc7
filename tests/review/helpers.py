"""Building blocks for review tests: a config and a manifest on disk, the CLI in-process, the database."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.db.session import make_engine, make_sessionmaker


def write_config(tmp: Path, db_url: str, sandbox_url: str, **extra: Any) -> Path:
    cfg: dict[str, Any] = {
        "database_url": db_url, "storage_url": f"file://{tmp / 'out'}",
        "providers": {"sandbox": {"base_url": sandbox_url}},
        "worker": {"lease_s": 10, "max_attempts": 3, "backoff_base_s": 0.05, "backoff_cap_s": 0.2, "concurrency": 4},
        **extra,
    }
    path = tmp / "pipeline.yaml"
    path.write_text(yaml.safe_dump(json.loads(json.dumps(cfg, default=str))))
    return path


def write_manifest(tmp: Path, job: str, items: list[dict[str, Any]], **top: Any) -> Path:
    path = tmp / f"{job}.yaml"
    path.write_text(yaml.safe_dump({"job": job, "providers": ["sandbox"], "defaults": {"resolution": "1K"},
                                    "prompt": "Product photo of {{ title }}", "items": items, **top}))
    return path


def cli(*args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(app, [str(a) for a in args])
    return res.exit_code, res.stdout, res.output


@contextlib.contextmanager
def sessions_for(db_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(db_url)
    try:
        yield make_sessionmaker(engine)
    finally:
        engine.dispose()
