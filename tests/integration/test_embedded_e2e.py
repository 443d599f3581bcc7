"""The embedded default end to end: `pipeline run` on SQLite, the memory broker, an in-process worker and
an in-process sandbox; the second run is all cache hits at $0."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
PIPELINE = str(Path(sys.executable).parent / "pipeline")


def test_demo_catalogue_twice(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "jobs", tmp_path / "jobs")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
    first = subprocess.run([PIPELINE, "run", "jobs/demo-catalogue.yaml", "--json"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=240)
    assert first.returncode == 0, first.stderr[-2000:]
    one = json.loads(first.stdout.strip().splitlines()[-1])
    n = sum(one["counts"].values())
    assert n >= 12 and one["counts"]["succeeded"] + one["counts"]["cached"] == n
    assert Decimal(one["cost_usd"]) > 0
    images = [p for p in (tmp_path / "output").rglob("*") if p.is_file() and "_cache" not in p.parts]
    assert len(images) >= 12
    for p in images:
        with Image.open(p) as im:
            im.load()

    second = subprocess.run([PIPELINE, "run", "jobs/demo-catalogue.yaml", "--json"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=240)
    assert second.returncode == 0, second.stderr[-2000:]
    two = json.loads(second.stdout.strip().splitlines()[-1])
    assert two["counts"]["cached"] == n
    assert Decimal(two["cost_usd"]) == 0
    assert Decimal(two["saved_usd"]) == Decimal(two["list_cost_usd"]) > 0
    human = subprocess.run([PIPELINE, "run", "jobs/demo-catalogue.yaml"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=240)
    assert human.returncode == 0
    assert "nothing new generated" in human.stdout and "$0.00 spent" in human.stdout
