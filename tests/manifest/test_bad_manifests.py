"""The malformed-manifest corpus: each one raises InputError naming its place (file:line, item id)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from pipeline.errors import InputError
from pipeline.manifest import validate_manifest

from .conftest import DATA

BAD = DATA / "bad"
EXPECTED: dict[str, list[str]] = yaml.safe_load((BAD / "expected.yaml").read_text(encoding="utf-8"))


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def test_the_corpus_is_complete() -> None:
    files = {p.name for p in BAD.glob("*.yaml")} - {"expected.yaml"}
    assert files == set(EXPECTED), "every bad manifest has an expectation and vice versa"
    assert len(files) >= 18


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bad_manifest_names_its_place(name: str) -> None:
    before = _snapshot(DATA)
    started = time.monotonic()
    with pytest.raises(InputError) as info:
        validate_manifest(BAD / name)
    assert time.monotonic() - started < 1.0
    text = str(info.value)
    for needle in EXPECTED[name]:
        assert needle in text, f"{needle!r} not in {text!r}"
    assert info.value.where, "the error names a place"
    assert ":" in info.value.where, "the place has a line number"
    assert _snapshot(DATA) == before, "loading writes nothing"


def test_relative_paths_are_named_as_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(BAD)
    with pytest.raises(InputError) as info:
        validate_manifest(Path("bad_aspect_ratio.yaml"))
    assert info.value.where == "bad_aspect_ratio.yaml:6 (item sku-2)"
    with pytest.raises(InputError) as info:
        validate_manifest(Path("csv_missing_column.yaml"))
    assert info.value.where == "data/missing_column.csv:2 (item sku-1)"
