"""The capture corpus itself: every file names its source and date and parses (captures/README.md)."""

from __future__ import annotations

import pytest

from tests.providers.corpus import CAPTURES, captures, load, shape_problems


@pytest.mark.parametrize("path", sorted(CAPTURES.glob("*/*.yaml")), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_capture_has_source_and_date(path):  # type: ignore[no-untyped-def]
    c = load(path)
    assert c.source.startswith(("http://", "https://")) or "@" in c.source, c.source
    assert len(c.read) == 10 and c.read[4] == "-" and c.read[7] == "-", c.read
    if c.kind == "request":
        assert c.method and c.route, "a request capture names its method and path"
    if c.kind == "response":
        assert c.status is not None and c.expect.get("outcome") in ("image", "error", "pending", "uploaded"), c.expect


def test_shape_problems_reports_missing_keys_and_types():
    documented = {"code": 200, "data": {"taskId": "x", "urls": ["u"]}}
    assert shape_problems({"code": 200, "data": {"taskId": "y", "urls": ["a", "b"]}, "extra": 1}, documented) == []
    assert shape_problems({"code": "200", "data": {"urls": [3]}}, documented) == [
        "$.code: expected number, got string", "$.data.taskId: missing", "$.data.urls[0]: expected string, got number"]


def test_loader_filters():
    assert all(c.provider == "google" for c in captures(provider="google"))
