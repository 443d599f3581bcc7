"""Size, alias and nesting limits, YAML scalar rules, and "only InputError comes out"."""

from __future__ import annotations

import contextlib
import time
import tracemalloc
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.errors import InputError
from pipeline.manifest import MAX_ITEMS_FILE_BYTES, MAX_MANIFEST_BYTES, load_manifest, validate_manifest

from .conftest import HEADER, WriteManifest


def _bomb(levels: int = 12, width: int = 10) -> str:
    lines = [HEADER.rstrip("\n"), f"description: &l0 [{', '.join(['lol'] * width)}]"]
    lines.append("items:")
    for level in range(1, levels):
        refs = ", ".join([f"*l{level - 1}"] * width)
        lines.append(f"  - &l{level} {{id: i{level}, title: x, tags: [{refs}]}}")
    return "\n".join(lines) + "\n"


def test_billion_laughs_fails_fast_in_bounded_memory(write_manifest: WriteManifest) -> None:
    path = write_manifest(_bomb())
    tracemalloc.start()
    started = time.monotonic()
    try:
        with pytest.raises(InputError, match="alias bomb"):
            load_manifest(path)
        elapsed = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < 0.5
    assert peak < 20 * 1024 * 1024


def test_merge_key_bomb_fails_fast(write_manifest: WriteManifest) -> None:
    lines = [HEADER.rstrip("\n"), "items:", "  - &m0 {id: a, title: x, k0: 1, k1: 2}"]
    for n in range(1, 40):
        lines.append(f"  - &m{n} {{<<: [*m{n - 1}, *m{n - 1}], id: a{n}}}")
    path = write_manifest("\n".join(lines) + "\n")
    started = time.monotonic()
    with pytest.raises(InputError, match="alias bomb"):
        load_manifest(path)
    assert time.monotonic() - started < 0.5


@pytest.mark.parametrize("depth", [100, 50_000])
def test_deep_nesting_is_refused(write_manifest: WriteManifest, depth: int) -> None:
    path = write_manifest(HEADER + "items:\n  - {id: a, title: x, deep: " + "[" * depth + "]" * depth + "}\n")
    with pytest.raises(InputError, match="nesting deeper"):
        load_manifest(path)


def test_deep_nesting_through_alias_chains_is_refused(write_manifest: WriteManifest) -> None:
    deep = "[" * 60 + "1" + "]" * 60
    lines = [HEADER.rstrip("\n"), "items:", f"  - &a0 {{id: a0, title: x, deep: {deep}}}"]
    for n in range(1, 5):
        lines.append(f"  - &a{n} {{id: a{n}, title: x, deep: [[[[[*a{n - 1}]]]]]}}")
    path = write_manifest("\n".join(lines) + "\n")
    with pytest.raises(InputError, match="nesting deeper"):
        load_manifest(path)


def test_oversized_manifest_is_refused_without_reading_it(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    with path.open("wb") as f:
        f.truncate(MAX_MANIFEST_BYTES + 1)  # sparse: nothing is written to disk
    started = time.monotonic()
    with pytest.raises(InputError) as info:
        load_manifest(path)
    assert time.monotonic() - started < 0.5
    assert info.value.where == str(path) and "more than" in info.value.message


def test_oversized_items_file_is_refused(write_manifest: WriteManifest, tmp_path: Path) -> None:
    path = write_manifest(HEADER + "items_from: big.csv\n")
    with (tmp_path / "big.csv").open("wb") as f:
        f.truncate(MAX_ITEMS_FILE_BYTES + 1)
    with pytest.raises(InputError) as info:
        load_manifest(path)
    assert "big.csv" in str(info.value) and "more than" in str(info.value)


def test_special_files_are_refused_not_blocked_on(write_manifest: WriteManifest, tmp_path: Path) -> None:
    import os

    os.mkfifo(tmp_path / "fifo.csv")
    path = write_manifest(HEADER + "items_from: fifo.csv\n")
    with pytest.raises(InputError, match="not a regular file"):
        load_manifest(path)
    with pytest.raises(InputError, match="not a regular file"):
        load_manifest(tmp_path)


def test_yaml_12_scalars(write_manifest: WriteManifest) -> None:
    path = write_manifest(
        HEADER + "items:\n  - {id: 007, title: NO, aspect_ratio: 16:9, count: 12, on: yes, flag: true}\n"
    )
    item = load_manifest(path).items[0]
    assert item.id == "007"
    assert item.aspect_ratio == "16:9"
    assert item.vars == {"title": "NO", "count": 12, "on": "yes", "flag": True}


def test_duplicate_keys_in_one_flow_mapping(write_manifest: WriteManifest) -> None:
    path = write_manifest(HEADER + "items:\n  - {id: a, title: x, title: y}\n")
    with pytest.raises(InputError, match="duplicate key 'title'") as info:
        load_manifest(path)
    assert info.value.where == f"{path}:5"


def test_python_tags_are_refused(write_manifest: WriteManifest) -> None:
    path = write_manifest(HEADER + "items:\n  - {id: a, title: !!python/object/apply:os.system [echo hi]}\n")
    with pytest.raises(InputError, match="YAML error") as info:
        load_manifest(path)
    assert info.value.where == f"{path}:5"


def test_bad_timestamp_is_an_input_error(write_manifest: WriteManifest) -> None:
    path = write_manifest(HEADER + "items:\n  - {id: a, title: x, launch: 2025-13-45}\n")
    with pytest.raises(InputError, match="invalid value") as info:
        load_manifest(path)
    assert info.value.where == f"{path}:5"


def test_empty_and_scalar_documents(write_manifest: WriteManifest) -> None:
    for text in ("", "# only a comment\n", "just a string\n", "---\na: 1\n---\nb: 2\n"):
        with pytest.raises(InputError):
            load_manifest(write_manifest(text))


_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.text(max_size=20),
    st.floats(allow_nan=True, allow_infinity=True),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
_keys = st.sampled_from(
    [
        "job",
        "providers",
        "prompt",
        "items",
        "items_from",
        "defaults",
        "budget",
        "output",
        "mode",
        "deadline",
        "max_price",
        "tags",
        "schedule",
        "id",
        "references",
        "x",
    ]
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=st.dictionaries(_keys, _values, max_size=8))
def test_fuzz_structured_only_input_error(write_manifest: WriteManifest, doc: dict[str, object]) -> None:
    path = write_manifest(yaml.safe_dump(doc, allow_unicode=True))
    with contextlib.suppress(InputError):
        validate_manifest(path)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=300) | st.text(max_size=300).map(lambda s: s.encode("utf-8", "surrogatepass")))
def test_fuzz_bytes_only_input_error(tmp_path: Path, raw: bytes) -> None:
    path = tmp_path / "fuzz.yaml"
    path.write_bytes(HEADER.encode() + raw)
    with contextlib.suppress(InputError):
        validate_manifest(path)
