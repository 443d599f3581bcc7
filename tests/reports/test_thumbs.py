"""Thumbnails: made with Pillow, stored under _thumbs/<cache_key>.jpg, shared by cache hits, and never the
reason an item fails."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import select

from pipeline.clock import utcnow
from pipeline.core.submit import submit
from pipeline.core.thumbs import THUMB_MAX_PX, ensure_thumbnail, make_thumbnail, store_thumbnail, thumb_key
from pipeline.db.models import Item
from pipeline.sandbox.server import SandboxServer
from pipeline.states import ItemState
from pipeline.storage.local import FileStorage
from tests.core.helpers import job, runtime, settings_for, specs
from tests.core.test_process import _run_all


def _png(size: tuple[int, int], mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, 120).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize(("size", "mode"), [((2048, 1024), "RGB"), ((300, 900), "RGBA"), ((64, 48), "P"),
                                            ((1024, 1024), "L")])
def test_make_thumbnail_is_a_small_jpeg(size: tuple[int, int], mode: str) -> None:
    data = make_thumbnail(_png(size, mode))
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "JPEG" and im.mode == "RGB"
        assert max(im.size) == min(THUMB_MAX_PX, max(size))
        ratio = size[0] / size[1]
        assert abs(im.size[0] / im.size[1] - ratio) < 0.05


def test_not_an_image_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        make_thumbnail(b"\x89PNG\r\n\x1a\nnot really")


def test_store_and_ensure(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path)
    key = store_thumbnail(storage, "ab" * 32, _png((800, 600)))
    assert key == thumb_key("ab" * 32) == f"_thumbs/{'ab' * 32}.jpg"
    assert (tmp_path / key).stat().st_size > 100
    # a cache hit finds the existing one without reading its source
    assert ensure_thumbnail(storage, "ab" * 32, lambda: b"never read") == key
    # and makes one from the cached image when the owner left none
    storage.put("_cache/cd.png", _png((500, 500)), "image/png", {})
    assert ensure_thumbnail(storage, "cd" * 32, lambda: storage.get("_cache/cd.png")) == thumb_key("cd" * 32)
    # failures are reported as None, never raised
    assert store_thumbnail(storage, "ef" * 32, b"garbage") is None
    assert ensure_thumbnail(storage, "ef" * 32, lambda: b"garbage") is None


def test_items_record_shared_thumbnails(tmp_path: Path, sandbox: SandboxServer) -> None:
    """Two items with one prompt: one call, one thumbnail, both items point at it."""
    rt = runtime(settings_for(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}", sandbox.url))
    try:
        res = submit(rt.sessions, job(), specs(2, prompt="one teapot"), utcnow())
        _run_all(rt, res.job_id, threads=2)
        with rt.sessions() as s:
            items = list(s.scalars(select(Item).where(Item.job_id == res.job_id)))
        assert sorted(i.state for i in items) == [ItemState.CACHED, ItemState.SUCCEEDED]
        keys = {i.thumb_key for i in items}
        assert keys == {thumb_key(items[0].cache_key)}
        with Image.open(tmp_path / "out" / keys.pop()) as im:
            assert max(im.size) == THUMB_MAX_PX
    finally:
        rt.close()


def test_thumbnail_failure_never_fails_the_item(tmp_path: Path, sandbox: SandboxServer) -> None:
    """`_thumbs` is a plain file, so every thumbnail put is refused: the items still succeed, without one."""
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "_thumbs").write_text("not a directory")
    rt = runtime(settings_for(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}", sandbox.url))
    try:
        res = submit(rt.sessions, job(), specs(3), utcnow())
        _run_all(rt, res.job_id)
        with rt.sessions() as s:
            items = list(s.scalars(select(Item).where(Item.job_id == res.job_id)))
        assert {i.state for i in items} == {ItemState.SUCCEEDED}
        assert {i.thumb_key for i in items} == {None}
        assert all((tmp_path / "out" / i.output_key).exists() for i in items)
    finally:
        rt.close()
