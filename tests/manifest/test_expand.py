"""Expansion: defaults, template variables, keys, references, cache_key and spec_hash semantics."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from pipeline.errors import InputError
from pipeline.manifest import (
    DEFAULT_OUTPUT_KEY,
    ItemSpec,
    cache_key_for,
    expand_items,
    load_manifest,
    validate_manifest,
)
from pipeline.providers.base import Reference

from .conftest import HEADER, WriteManifest, png_bytes


def _fake_fetch(calls: list[str]):  # type: ignore[no-untyped-def]
    def fetch(source: str, base_dir: Path) -> Reference:
        calls.append(source)
        data = source.encode()
        return Reference(data=data, mime_type="image/png", sha256=hashlib.sha256(data).hexdigest())

    return fetch


def _expand(path: Path, **kw: object) -> list[ItemSpec]:
    return expand_items(load_manifest(path, **kw), fetch_reference=_fake_fetch([]))  # type: ignore[arg-type]


def test_cache_key_is_sha256_of_canonical_json() -> None:
    body = {
        "model": "m",
        "prompt": "p é",
        "resolution": "2K",
        "aspect_ratio": "4:5",
        "format": "png",
        "references": ["ab", "cd"],
    }
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    expected = hashlib.sha256(canonical.encode()).hexdigest()
    got = cache_key_for(
        model="m",
        prompt="p é",
        resolution="2K",
        aspect_ratio="4:5",
        output_format="png",
        reference_sha256s=["ab", "cd"],
    )
    assert got == expected
    swapped = cache_key_for(
        model="m",
        prompt="p é",
        resolution="2K",
        aspect_ratio="4:5",
        output_format="png",
        reference_sha256s=["cd", "ab"],
    )
    assert swapped != got  # reference order matters to the model


def _spec(
    write_manifest: WriteManifest,
    *,
    prompt: str = "Photo of {{ title }}",
    key: str = "{{ id }}.png",
    providers: str = "[sandbox]",
    tags: str = "[a]",
    ref: str = "x.png",
) -> ItemSpec:
    text = (
        f'job: t\nproviders: {providers}\nprompt: "{prompt}"\noutput: {{key: "{key}"}}\n'
        f"items:\n  - {{id: i, title: mug, tags: {tags}, references: [{ref}]}}\n"
    )
    return _expand(write_manifest(text))[0]


def test_what_changes_cache_key_and_spec_hash(write_manifest: WriteManifest) -> None:
    base = _spec(write_manifest)
    prompt = _spec(write_manifest, prompt="Photo of a {{ title }}")
    key = _spec(write_manifest, key="other/{{ id }}.png")
    provider = _spec(write_manifest, providers="[google, laozhang]")
    tags = _spec(write_manifest, tags="[b]")
    ref = _spec(write_manifest, ref="y.png")
    assert prompt.cache_key != base.cache_key and prompt.spec_hash != base.spec_hash
    assert key.cache_key == base.cache_key and key.spec_hash != base.spec_hash
    assert tags.cache_key == base.cache_key and tags.spec_hash != base.spec_hash
    assert provider.cache_key == base.cache_key and provider.spec_hash == base.spec_hash
    assert ref.cache_key != base.cache_key
    assert base.cache_key == cache_key_for(
        model="gemini-3-pro-image-preview",
        prompt="Photo of mug",
        resolution="1K",
        aspect_ratio="1:1",
        output_format="png",
        reference_sha256s=[hashlib.sha256(b"x.png").hexdigest()],
    )


def test_model_is_part_of_the_cache_key(write_manifest: WriteManifest) -> None:
    manifest = load_manifest(write_manifest(HEADER + "items:\n  - {id: a, title: x}\n"))
    one = expand_items(manifest, fetch_reference=_fake_fetch([]))[0]
    two = expand_items(manifest, fetch_reference=_fake_fetch([]), model="gemini-3-pro-image")[0]
    assert one.cache_key != two.cache_key


def test_defaults_when_absent(write_manifest: WriteManifest) -> None:
    specs = _expand(
        write_manifest(HEADER + "items:\n  - {id: a, title: x}\n  - {id: b, title: y, format: jpeg}\n")
    )
    assert (specs[0].resolution, specs[0].aspect_ratio, specs[0].output_format) == ("1K", "1:1", "png")
    assert specs[0].output_key == "t/a.png"
    assert specs[1].output_key == "t/b.jpg" and specs[1].output_format == "jpeg"
    assert DEFAULT_OUTPUT_KEY == "{{ job }}/{{ id }}.{{ format }}"


def test_item_values_override_defaults(write_manifest: WriteManifest) -> None:
    text = (
        'job: t\nproviders: [sandbox]\ndefaults: {resolution: 2K, aspect_ratio: "16:9", format: webp}\n'
        'prompt: "{{ title }}"\nitems:\n  - {id: a, title: x}\n'
        '  - {id: b, title: y, resolution: 4K, aspect_ratio: "9:16", format: png}\n'
    )
    a, b = _expand(write_manifest(text))
    assert (a.resolution, a.aspect_ratio, a.output_format, a.output_key) == ("2K", "16:9", "webp", "t/a.webp")
    assert (b.resolution, b.aspect_ratio, b.output_format, b.output_key) == ("4K", "9:16", "png", "t/b.png")


def test_template_variables(write_manifest: WriteManifest) -> None:
    text = (
        "job: vars\nproviders: [sandbox]\n"
        'prompt: "{{ id }}|{{ job }}|{{ index }}|{{ title }}|{{ run_date }}|{{ shared }}|{{ resolution }}"\n'
        "items:\n  - {id: a, title: x}\n  - {id: b, title: y, shared: mine}\n"
    )
    specs = _expand(write_manifest(text), extra_vars={"run_date": "2025-03-01", "shared": "caller"})
    assert specs[0].prompt == "a|vars|0|x|2025-03-01|caller|1K"
    assert specs[1].prompt == "b|vars|1|y|2025-03-01|mine|1K"  # the item's own field wins over a caller extra
    assert specs[1].fields == {"title": "y", "shared": "mine"}


def test_tags_default_and_override(write_manifest: WriteManifest) -> None:
    text = (
        HEADER
        + "tags: [job, shared]\nitems:\n  - {id: a, title: x}\n  - {id: b, title: y, tags: [own, own]}\n"
    )
    a, b = _expand(write_manifest(text))
    assert a.tags == ("job", "shared") and b.tags == ("own",)


def test_output_keys_are_sanitised(write_manifest: WriteManifest) -> None:
    text = HEADER + 'output: {key: "out//{{ job }}///{{ id }}.png"}\nitems:\n  - {id: a, title: x}\n'
    assert _expand(write_manifest(text))[0].output_key == "out/t/a.png"
    for bad in ("{{ id }}/../x.png", "a\\\\{{ id }}", "{{ id }}/", "./{{ id }}", "x" * 1100 + "{{ id }}"):
        text = HEADER + f'output: {{key: "{bad}"}}\nitems:\n  - {{id: a, title: x}}\n'
        with pytest.raises(InputError, match="unsafe output key") as info:
            _expand(write_manifest(text))
        assert info.value.where is not None and info.value.where.endswith("(item a)")


def test_a_field_value_cannot_smuggle_traversal_into_the_key(write_manifest: WriteManifest) -> None:
    text = (
        HEADER + 'output: {key: "{{ folder }}/{{ id }}.png"}\nitems:\n  - {id: a, title: x, folder: ../..}\n'
    )
    with pytest.raises(InputError, match="unsafe output key"):
        _expand(write_manifest(text))


def test_each_distinct_reference_is_fetched_once(write_manifest: WriteManifest) -> None:
    text = HEADER + (
        "items:\n  - {id: a, title: x, references: [r1.png, r2.png]}\n"
        "  - {id: b, title: y, references: [r1.png]}\n"
    )
    calls: list[str] = []
    specs = expand_items(load_manifest(write_manifest(text)), fetch_reference=_fake_fetch(calls))
    assert calls == ["r1.png", "r2.png"]
    assert specs[0].references[0].sha256 == specs[1].references[0].sha256
    assert Path(specs[0].references[0].source).is_absolute()  # local sources are recorded resolved


def test_fetch_errors_get_the_item_place(write_manifest: WriteManifest) -> None:
    path = write_manifest(
        HEADER + "items:\n  - {id: a, title: x}\n  - {id: b, title: y, references: [gone.png]}\n"
    )

    def fetch(source: str, base_dir: Path) -> Reference:
        raise InputError(f"reference {source!r}: file not found")

    with pytest.raises(InputError) as info:
        expand_items(load_manifest(path), fetch_reference=fetch)
    assert info.value.where == f"{path}:6 (item b)" and "gone.png" in info.value.message


def test_real_local_references(write_manifest: WriteManifest, tmp_path: Path) -> None:
    data = png_bytes()
    path = write_manifest(
        HEADER + "items:\n  - {id: a, title: x, references: [refs/a.png]}\n", files={"refs/a.png": data}
    )
    summary = validate_manifest(path)
    ref = summary.items[0].references[0]
    assert ref.sha256 == hashlib.sha256(data).hexdigest() and ref.mime_type == "image/png"
    assert ref.source == str((tmp_path / "refs/a.png").resolve())
    assert summary.reference_count == 1 and summary.unresolved_references == 0


def test_remote_references_are_only_checked_by_validate(write_manifest: WriteManifest) -> None:
    text = HEADER + (
        "items:\n  - {id: a, title: x, references: ['s3://bucket/k.png', "
        "'https://images.example.com/a.png']}\n"
    )
    summary = validate_manifest(write_manifest(text))
    assert summary.unresolved_references == 2
    for bad in (
        "s3://bucket-only",
        "ftp://x/y.png",
        "http://plain.example.com/a.png",
        "https://u:p@h.com/a.png",
    ):
        with pytest.raises(InputError, match="reference"):
            validate_manifest(
                write_manifest(HEADER + f"items:\n  - {{id: a, title: x, references: ['{bad}']}}\n")
            )


def test_loading_writes_nothing(write_manifest: WriteManifest, tmp_path: Path) -> None:
    path = write_manifest(
        HEADER + "items:\n  - {id: a, title: x, references: [refs/a.png]}\n",
        files={"refs/a.png": png_bytes()},
    )
    before = sorted(p.name for p in tmp_path.rglob("*"))
    validate_manifest(path)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_manifest_settings(write_manifest: WriteManifest) -> None:
    text = (
        "job: full\nproviders: [google, laozhang]\nmode: auto\ndeadline: 1d12h\nregion: EU\n"
        "max_price: 0.134\n"
        "failover: false\ndata_policy: official\ndescription: d\nbudget: {max_usd: 12.5}\n"
        "schedule: {cron: '0 2 * * *', timezone: Europe/Berlin}\n"
        'prompt: "{{ title }}"\nitems:\n  - {id: a, title: x}\n'
    )
    m = load_manifest(write_manifest(text))
    from datetime import datetime, timedelta
    from decimal import Decimal

    assert m.deadline == timedelta(days=1, hours=12)
    assert m.deadline_at(datetime(2025, 1, 1)) == datetime(2025, 1, 2, 12)
    assert m.max_price == Decimal("0.134") and m.budget is not None and m.budget.max_usd == Decimal("12.5")
    assert (m.mode, m.region, m.failover, m.data_policy) == ("auto", "EU", False, "official")
    assert m.schedule is not None and m.schedule.timezone == "Europe/Berlin"
    dumped = m.model_dump(mode="json", exclude={"items"})
    assert dumped["failover"] is False and dumped["max_price"] == "0.134"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("'2025-06-01T18:00:00+02:00'", "2025-06-01 16:00:00"),
        ("2025-06-01T18:00:00Z", "2025-06-01 18:00:00"),
        ("'2025-06-01 08:30'", "2025-06-01 08:30:00"),
    ],
)
def test_absolute_deadlines_are_naive_utc(write_manifest: WriteManifest, value: str, expected: str) -> None:
    m = load_manifest(write_manifest(HEADER + f"deadline: {value}\nitems:\n  - {{id: a, title: x}}\n"))
    assert str(m.deadline_at()) == expected


@pytest.mark.parametrize(
    "field",
    [
        "max_price: 0",
        "max_price: -1",
        "failover: 'yes'",
        "data_policy: cheap",
        "providers: []",
        "providers: [a, a]",
        "job: 'two words'",
        "tags: ['']",
        "budget: {max_usd: .nan}",
        "budget: {}",
        "deadline: 3600",
    ],
)
def test_bad_settings(write_manifest: WriteManifest, field: str) -> None:
    text = HEADER.replace(
        "providers: [sandbox]\n", "providers: [sandbox]\n" if "providers" not in field else ""
    )
    with pytest.raises(InputError) as info:
        load_manifest(write_manifest(text + field + "\nitems:\n  - {id: a, title: x}\n"))
    assert info.value.where is not None and ":" in info.value.where


@pytest.mark.parametrize(
    "item",
    [
        "{id: ''}",
        "{id: 'a/b'}",
        "{id: 'a,b'}",
        "{id: ' a'}",
        "{id: [1]}",
        "{title: no-id}",
        "{id: true}",
        "[a, b]",
        "{id: a, references: [1]}",
        "{id: a, tags: [[x]]}",
        "{id: a, output_format: png}",
        "{id: a, 3: x}",
    ],
)
def test_bad_items(write_manifest: WriteManifest, item: str) -> None:
    path = write_manifest(HEADER + f"items:\n  - {{id: ok, title: x}}\n  - {item}\n")
    with pytest.raises(InputError) as info:
        load_manifest(path)
    assert info.value.where is not None and info.value.where.startswith(f"{path}:6")


def test_reserved_looking_typos_are_variables_with_a_warning(write_manifest: WriteManifest) -> None:
    path = write_manifest(HEADER + "items:\n  - {id: a, title: x, resolutoin: 4K}\n")
    summary = validate_manifest(path)
    assert summary.items[0].resolution == "1K" and summary.items[0].fields["resolutoin"] == "4K"
    assert any("resolutoin" in w and "'resolution'" in w for w in summary.warnings)
