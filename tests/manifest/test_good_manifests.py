"""The good corpus and the demo job load and expand to what they say."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

from pipeline.manifest import load_manifest, validate_manifest

from .conftest import DATA

GOOD = DATA / "good"
ROOT = Path(__file__).resolve().parents[2]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_every_good_manifest_validates() -> None:
    for path in sorted(GOOD.glob("*.yaml")):
        summary = validate_manifest(path, extra_vars={"run_date": "2025-03-03"})
        assert summary.item_count >= 1, path
        assert not summary.warnings, (path, summary.warnings)


def test_contract_manifest() -> None:
    summary = validate_manifest(GOOD / "contract.yaml")
    m = summary.manifest
    assert m.job == "spring-catalogue" and m.providers == ("laozhang", "google") and m.mode == "sync"
    assert m.schedule is not None and m.schedule.cron == "0 2 * * *"
    one, two = summary.items
    assert (one.key, one.resolution, one.aspect_ratio, one.output_format) == ("sku-001", "2K", "1:1", "png")
    assert one.prompt == "Professional product photo of wireless earbuds on marble, soft light"
    assert one.output_key == "catalogue/spring-catalogue/sku-001.png"
    assert [r.sha256 for r in one.references] == [_sha(GOOD / "refs/earbuds.png")]
    assert (two.key, two.resolution, two.aspect_ratio, two.references) == ("sku-002", "4K", "4:5", ())
    assert one.cache_key != two.cache_key and len(one.cache_key) == 64


def test_csv_items_manifest() -> None:
    p1, p2, p3 = validate_manifest(GOOD / "csv_items.yaml").items
    assert (p1.resolution, p1.aspect_ratio, p1.output_format, p1.output_key) == (
        "2K",
        "3:2",
        "jpeg",
        "csv-items/p-1.jpg",
    )
    assert p1.tags == ("kitchen", "featured") and p2.tags == ("csv",)
    assert [r.mime_type for r in p2.references] == ["image/png", "image/jpeg"]
    assert p2.prompt == "earbuds in white, glossy\nplastic texture, studio light"
    assert (p3.prompt, p3.output_key, p3.resolution) == (
        "A black lamp, night scene",
        "shop/lamps/p-3.jpg",
        "4K",
    )


def test_jsonl_items_manifest() -> None:
    a, b = validate_manifest(GOOD / "jsonl_items.yaml").items
    assert a.key == "101" and a.prompt == "Sneaker with mesh upper, foam sole, priced 89.5"
    assert a.output_key == "social/jsonl-items/000-101.png" and a.references[0].mime_type == "image/webp"
    assert b.output_key == "social/jsonl-items/001-102.webp" and b.tags == ("bags", "new")
    assert b.prompt == "Backpack with laptop sleeve"


def test_mixed_manifest() -> None:
    specs = validate_manifest(GOOD / "mixed.yaml", extra_vars={"run_date": "2025-03-03"}).items
    assert [s.key for s in specs] == ["mon", "tue", "wed", "sat", "sun"]
    assert [s.index for s in specs] == [0, 1, 2, 3, 4]
    mon, tue, wed = specs[:3]
    assert tue.references == mon.references  # merged in with <<: *monday
    assert tue.prompt == "Tuesday post: new arrivals, brand colours, 9:16 story" and tue.tags == ("launch",)
    assert wed.prompt == "Behind the scenes Wednesday: behind the scenes (weekly-social #2)"
    assert (wed.output_key, wed.aspect_ratio) == ("social/2025-03-03/wed.jpg", "16:9")
    assert specs[3].output_key == "social/2025-03-03/sat.webp" and specs[3].tags == ("social", "weekly")


def test_reloading_gives_identical_specs() -> None:
    one = validate_manifest(GOOD / "mixed.yaml", extra_vars={"run_date": "d"}).items
    two = validate_manifest(GOOD / "mixed.yaml", extra_vars={"run_date": "d"}).items
    assert one == two


def test_demo_catalogue() -> None:
    summary = validate_manifest(ROOT / "jobs" / "demo-catalogue.yaml")
    m = summary.manifest
    assert m.providers == ("sandbox",) and m.items_from == "data/products.csv"
    assert summary.item_count >= 14
    by_res = Counter(s.resolution for s in summary.items)
    assert set(by_res) == {"1K", "2K", "4K"} and 1 <= by_res["4K"] <= 2
    assert len({s.aspect_ratio for s in summary.items}) >= 4
    with_refs = {s.key: s.references for s in summary.items if s.references}
    assert len(with_refs) == 2
    assert {Path(r.source).name for refs in with_refs.values() for r in refs} == {"earbuds.png", "mug.png"}
    for spec in summary.items:
        assert spec.output_key == f"catalogue/demo-catalogue/{spec.key}.png"
        assert "{{" not in spec.prompt and spec.prompt.startswith("Professional product photo of ")
    assert load_manifest(ROOT / "jobs" / "demo-catalogue.yaml").items[0].where.endswith("products.csv:2")
