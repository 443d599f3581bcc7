"""Two jobs writing the same output key overwrote each other's images silently. Now `submit` refuses a key an item
of another job already has (exit 2, naming the item and the other job, nothing written) unless the manifest
says `output: {shared: true}`; resubmitting the same job is unaffected. On Postgres and SQLite."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from sqlalchemy import create_engine, func, select
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.db.models import Item, Job


@pytest.fixture(params=["sqlite", "postgres"])
def cfg(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    url = f"sqlite:///{tmp_path / 'p.db'}" if request.param == "sqlite" else str(request.getfixturevalue("pg_url"))
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump({"database_url": url, "storage_url": f"file://{tmp_path / 'out'}"}))
    return path


def _manifest(tmp_path: Path, job: str, *, shared: bool = False) -> Path:
    output: dict[str, object] = {"key": "shared/{{ id }}.png"}
    if shared:
        output["shared"] = True
    path = tmp_path / f"{job}.yaml"
    path.write_text(yaml.safe_dump({"job": job, "providers": ["sandbox"], "prompt": "photo {{ id }}",
                                    "output": output, "items": [{"id": "a"}, {"id": "b"}]}))
    return path


def _jobs(cfg: Path) -> dict[str, int]:
    engine = create_engine(yaml.safe_load(cfg.read_text())["database_url"])
    try:
        with engine.connect() as c:
            return {name: int(n) for name, n in c.execute(
                select(Job.name, func.count(Item.id)).join(Item, Item.job_id == Job.id).group_by(Job.name))}
    finally:
        engine.dispose()


def test_a_second_job_on_the_same_keys_is_refused_unless_shared(cfg: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    first = runner.invoke(app, ["submit", str(_manifest(tmp_path, "first")), "--config", str(cfg)])
    assert first.exit_code == 0, first.output
    again = runner.invoke(app, ["submit", str(_manifest(tmp_path, "first")), "--config", str(cfg)])
    assert again.exit_code == 0, again.output  # the same job again: its own keys

    second = runner.invoke(app, ["submit", str(_manifest(tmp_path, "second")), "--config", str(cfg)])
    assert second.exit_code == 2, second.output
    flat = " ".join(second.output.split())
    assert "item a: output key 'shared/a.png' is also written by item 'a' of job 'first'" in flat
    assert "shared: true" in flat
    assert _jobs(cfg) == {"first": 2}  # nothing of the second job was written

    shared = runner.invoke(app, ["submit", str(_manifest(tmp_path, "second", shared=True)), "--config", str(cfg)])
    assert shared.exit_code == 0, shared.output
    assert _jobs(cfg) == {"first": 2, "second": 2}
