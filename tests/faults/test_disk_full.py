"""Issue 13, class 7 (reporting side): disk full is not success.

The file storage root is a real, tiny tmpfs (64 KiB): after a few images the store answers ENOSPC, a retryable
refusal, and the paid images go to the spool (.pipeline/spool). The run's exit code, `status` (table and JSON),
`report` (JSON and HTML) must tell "stored" from "paid and spooled", listing the spooled items. When the disk
has room again, the next process that opens the store uploads the dead run's spool and everything is stored.

Needs root (mount); skipped elsewhere. The core change that would make a spooled item not count as succeeded at
all (a state or flag written when the image is spooled, cleared by the flush) is described in RELIABILITY.md.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.security.cli import run_cli

ITEMS = 12


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "out"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True,
                         text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_a_full_disk_is_reported_as_paid_and_spooled_not_stored(tmp_path: Path, small_disk: Path) -> None:
    (tmp_path / "pipeline.yaml").write_text(yaml.safe_dump({"storage_url": f"file://{small_disk}"}))
    (tmp_path / "m.yaml").write_text(yaml.safe_dump({
        "job": "disk", "providers": ["sandbox"], "prompt": "photo {{ id }}",
        "items": [{"id": f"i{i:02d}"} for i in range(ITEMS)]}))

    ran = run_cli(tmp_path, "run", "m.yaml", "--json", timeout=300)
    assert "Traceback" not in ran.text
    summary = json.loads(ran.out)
    assert ran.rc == 1, ran.text  # not success while paid images wait in the spool
    done = summary["counts"]["succeeded"] + summary["counts"]["cached"]
    assert done == ITEMS
    spooled, stored = summary["spooled_items"], summary["stored_items"]
    present = sorted(p.stem for p in (small_disk / "disk").glob("*.png")) if (small_disk / "disk").exists() else []
    assert 0 < spooled < ITEMS and stored + spooled == ITEMS
    assert stored == len(present)  # "stored" is exactly what is on the disk
    assert set(summary["spooled"]).isdisjoint(present)
    print(f"disk-full figures: {ITEMS} paid, {stored} stored, {spooled} spooled")

    status = run_cli(tmp_path, "status", "disk", "--json")
    assert json.loads(status.out)["spooled_items"] == spooled
    table = run_cli(tmp_path, "status", "disk")
    assert f"{spooled} items paid but not stored yet" in table.text, table.text
    report = run_cli(tmp_path, "report", "disk", "--json")
    assert json.loads(report.out)["spooled_items"] == spooled
    page = tmp_path / "r.html"
    assert run_cli(tmp_path, "report", "disk", "--html", str(page)).rc == 0
    assert f'data-testid="spooled" data-value="{spooled}"' in page.read_text()

    # room again: the next process to open the store uploads the dead run's spool, and nothing is spooled
    subprocess.run(["mount", "-o", "remount,size=16m", str(small_disk)], check=True)
    again = run_cli(tmp_path, "run", "m.yaml", "--json", timeout=300)
    assert again.rc == 0, again.text
    final = json.loads(run_cli(tmp_path, "status", "disk", "--json").out)
    assert final["spooled_items"] == 0 and final["stored_items"] == ITEMS
    assert len(list((small_disk / "disk").glob("*.png"))) == ITEMS
    assert not [p for p in (tmp_path / ".pipeline" / "spool").rglob("*.json")]
