"""Issue 13, class 1 (first half): the storage location is checked before anything is paid.

`FileStorage.check_location()` (and `check()`, which runs it) refuses a root where a symbolic link leads outside
it or where `_cache`/`_thumbs` are links; a key whose path leads out through a link is refused with
`UnsafeLocation`, a permanent StorageError naming the link. `validate`, `submit`, `run` and `worker` refuse such
a root with exit 2 (tests/security/test_hostile_cli.py runs them). A link that appears after the check (between
submit and the call) is the post-payment case: today's core records the paid call and fails the item with the
storage reason, which the last test measures (the attempt bound for unexpected errors is the later helper's).
"""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import func, select

from pipeline.clock import utcnow
from pipeline.core.process import process_item
from pipeline.core.submit import submit
from pipeline.db.models import Item, LedgerEntry
from pipeline.errors import StorageError
from pipeline.runtime import open_runtime
from pipeline.sandbox.server import start_sandbox
from pipeline.storage.keys import UnsafeKey
from pipeline.storage.local import FileStorage, UnsafeLocation
from pipeline.storage.spool import SpoolingStorage
from tests.core.helpers import job, settings_for, specs


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "outside").mkdir()
    r = tmp_path / "out"
    (r / "jobs" / "deep" / "er").mkdir(parents=True)
    return r


def test_a_clean_root_and_a_missing_root_pass(root: Path, tmp_path: Path) -> None:
    FileStorage(root).check_location()
    FileStorage(tmp_path / "not-yet").check_location()
    assert not (tmp_path / "not-yet").exists()  # check_location creates nothing


@pytest.mark.parametrize("link,target,reason", [
    ("jobs/link", "../../outside", "'jobs/link' leads outside it"),
    ("jobs/deep/er/link", "/", "'jobs/deep/er/link' leads outside it"),
    ("dangling", "/nonexistent/elsewhere", "'dangling' leads outside it"),
    ("jobs/file.png", "../../outside/secret.png", "'jobs/file.png' leads outside it"),
    ("_cache", "jobs", "_cache is a symbolic link"),  # even pointing inside: the pipeline's own objects
    ("_thumbs", "../outside", "_thumbs is a symbolic link"),
])
def test_links_that_lead_out_are_refused_naming_them(root: Path, link: str, target: str, reason: str) -> None:
    (root / link).symlink_to(target)
    storage = FileStorage(root)
    for check in (storage.check_location, storage.check):
        with pytest.raises(UnsafeLocation) as info:
            check()
        assert isinstance(info.value, StorageError) and not info.value.retryable
        assert reason in str(info.value)
    assert not list(root.rglob(".tmp-*"))  # check() refused before writing its probe file


def test_links_inside_the_root_and_a_linked_root_are_fine(root: Path, tmp_path: Path) -> None:
    (root / "alias").symlink_to("jobs/deep")
    FileStorage(root).check_location()
    (tmp_path / "via").symlink_to(root)
    FileStorage(tmp_path / "via").check()


@pytest.mark.parametrize("key", ["jobs/link/x.png", "_cache/ab/abc.png", "_thumbs/abc.jpg"])
def test_keys_through_links_are_a_permanent_storage_error(root: Path, tmp_path: Path, key: str) -> None:
    (root / "jobs" / "link").symlink_to(tmp_path / "outside")
    (root / "_cache").symlink_to(tmp_path / "outside")
    (root / "_thumbs").symlink_to("jobs")
    storage = FileStorage(root)
    with pytest.raises(UnsafeLocation) as info:
        storage.put(key, b"png", "image/png", {})
    assert isinstance(info.value, StorageError) and isinstance(info.value, UnsafeKey)
    assert not info.value.retryable and "symbolic link" in str(info.value) and key in str(info.value)
    assert list((tmp_path / "outside").iterdir()) == []


def test_the_spool_does_not_swallow_a_refusal(root: Path, tmp_path: Path) -> None:
    (root / "_cache").symlink_to(tmp_path / "outside")
    spooling = SpoolingStorage(FileStorage(root), tmp_path / "spool")
    with pytest.raises(UnsafeLocation):
        spooling.put("_cache/ab/x.png", b"png", "image/png", {})
    assert spooling.pending() == 0
    with pytest.raises(UnsafeLocation):
        spooling.check_location()


def test_worker_start_refuses_the_root(root: Path, tmp_path: Path) -> None:
    (root / "_cache").symlink_to(tmp_path / "outside")
    settings = settings_for(tmp_path, f"sqlite:///{tmp_path / 'p.db'}", "http://127.0.0.1:9")
    from pipeline.errors import InputError

    with pytest.raises(InputError, match="_cache is a symbolic link") as info:
        open_runtime(settings)
    assert info.value.where is not None and "storage_url" in info.value.where
    assert not (tmp_path / "p.db").exists()  # refused before the database was created


def test_a_link_that_appears_after_the_check_costs_one_recorded_call(tmp_path: Path) -> None:
    """The post-payment case: the call is paid, recorded in the ledger at the provider's price, and the item
    fails with the storage reason (no retry loop, no $0.00 report)."""
    sandbox = start_sandbox({"protocols": {"gemini": {"latency": {"min_s": 0.01, "max_s": 0.02}}}})
    try:
        settings = settings_for(tmp_path, f"sqlite:///{tmp_path / 'p.db'}", sandbox.url)
        rt = open_runtime(settings)  # the check passes: nothing is linked yet
        try:
            res = submit(rt.sessions, job("late-link"), specs(1), utcnow())
            (tmp_path / "outside").mkdir()
            os.symlink(tmp_path / "outside", tmp_path / "out" / "_cache")
            with rt.sessions() as s:
                item_id = int(s.scalar(select(Item.id).where(Item.job_id == res.job_id)) or 0)
            process_item(rt.ctx, item_id)
            with rt.sessions() as s:
                item = s.get_one(Item, item_id)
                ledger = s.scalar(select(func.coalesce(func.sum(LedgerEntry.cost_usd), 0)))
                rows = s.scalar(select(func.count()).select_from(LedgerEntry))
        finally:
            rt.close()
        billed = sandbox.ledger()
    finally:
        sandbox.stop()
    print(f"storage figures: {billed['billed_images']} paid call, ledger ${Decimal(ledger)} (sandbox billed "
          f"${billed['billed_usd']}), item {item.state}: {item.failure_reason}")
    assert billed["billed_images"] == 1
    assert rows == 1 and Decimal(ledger) == Decimal(billed["billed_usd"]) > 0
    assert item.state == "failed" and item.failure_reason is not None
    assert "storage:" in item.failure_reason and "symbolic link" in item.failure_reason
    assert list((tmp_path / "outside").iterdir()) == []
