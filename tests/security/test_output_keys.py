"""Output keys: no manifest can write outside the configured bucket and prefix. Properties over any text:
sanitize_key either refuses a key or returns a normalised relative key (idempotent, no '.'/'..' segments, not
absolute, no backslash or control character, within S3's length limit); the file backend writes only below
its root (symlinks on the way included); the S3 backend writes only below its prefix (checked by listing the
whole bucket on moto); and a manifest's key template, fed hostile item fields, expands to such keys or fails.
tests/manifest/test_keys.py and tests/storage/test_contract.py hold the example-based cases."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.config import load_settings
from pipeline.errors import InputError
from pipeline.services import load
from pipeline.storage.factory import open_storage
from pipeline.storage.keys import MAX_KEY_BYTES, UnsafeKey, sanitize_key
from pipeline.storage.local import FileStorage
from tests.fixtures.s3 import S3_TEST_ENV_BASE, MotoServer

SEGMENTS = st.one_of(
    st.sampled_from(["..", ".", "", "a", "b.png", "...", ". .", "..\\..", "%2e%2e", "\u2024\u2024", "．．", "~",
                     "/", "//", "\\", "\x00", "\n", "\x7f", "\u0085", "é", "con", "a" * 300, " "]),
    st.text(min_size=0, max_size=12),
)
KEYS = st.one_of(st.text(max_size=80), st.lists(SEGMENTS, min_size=1, max_size=6).map("/".join),
                 st.lists(SEGMENTS, min_size=1, max_size=4).map(lambda s: "/" + "/".join(s)))


def _check_clean(key: str) -> None:
    assert key and not key.startswith("/") and "\\" not in key
    assert all(seg not in ("", ".", "..") for seg in key.split("/")), key
    assert len(key.encode("utf-8")) <= MAX_KEY_BYTES
    assert not any(ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F for ch in key)


@settings(max_examples=2000, deadline=None)
@given(raw=KEYS)
def test_sanitize_key_refuses_or_normalises(raw: str) -> None:
    try:
        key = sanitize_key(raw)
    except UnsafeKey:
        return
    _check_clean(key)
    assert sanitize_key(key) == key  # idempotent: a stored key means the same thing when read back


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=KEYS)
def test_file_backend_writes_only_below_its_root(tmp_path: Path, raw: str) -> None:
    root = tmp_path / "root"
    storage = FileStorage(root)
    outside_before = sorted(p.name for p in tmp_path.iterdir())
    try:
        storage.put(raw, b"x", "image/png", {})
    except (UnsafeKey, Exception) as e:  # refused (UnsafeKey) or a file-system refusal (StorageError)
        assert isinstance(e, UnsafeKey) or type(e).__name__ == "StorageError", repr(e)
    assert sorted(p.name for p in tmp_path.iterdir()) in (outside_before, sorted({*outside_before, "root"}))
    for path in root.rglob("*") if root.exists() else ():
        assert path.resolve().is_relative_to(root.resolve())


def test_file_backend_refuses_symlinks_that_lead_out(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "jobs").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", root / "jobs" / "link")
    storage = FileStorage(root)
    with pytest.raises(UnsafeKey):
        storage.put("jobs/link/x.png", b"x", "image/png", {})
    assert list((tmp_path / "elsewhere").iterdir()) == []


@pytest.fixture(scope="module")
def s3_target() -> Iterator[tuple[Any, Any, str]]:
    """A moto server, a client on it, the storage under s3://BUCKET/tenant/a, and the bucket's name."""
    import boto3

    server = MotoServer()
    server.start()
    bucket = f"keys-{uuid.uuid4().hex[:12]}"
    client = boto3.session.Session(aws_access_key_id="test", aws_secret_access_key="test",
                                   region_name="us-east-1").client("s3", endpoint_url=server.endpoint_url)
    client.create_bucket(Bucket=bucket)
    storage = open_storage(f"s3://{bucket}/tenant/a", env={**S3_TEST_ENV_BASE,
                                                            "AWS_ENDPOINT_URL_S3": server.endpoint_url})
    try:
        yield client, storage, bucket
    finally:
        client.close()
        server.stop()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=KEYS)
def test_s3_backend_writes_only_below_its_prefix(s3_target: tuple[Any, Any, str], raw: str) -> None:
    client, storage, bucket = s3_target
    with contextlib.suppress(UnsafeKey):
        storage.put(raw, b"x", "image/png", {})
    keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for o in page.get("Contents", [])]
    assert all(k.startswith("tenant/a/") and ".." not in k.split("/") for k in keys), keys


KEY_TEMPLATES = ["{{ title }}", "{{ title }}/{{ id }}.png", "out/{{ title }}.png", "{{ title }}{{ title }}",
                 "{{ title|replace('x', '/') }}.png", "{{ title ~ '/' ~ id }}", "{{ title|urlencode }}"]
HOSTILE = ["..", "../..", "../../etc/passwd", "/abs", "a/../../b", "..\\..\\x", "x/", "%2e%2e/x", "..%2F..",
           "\u2025", "．．/x", "a//b", "\x00", "\t", "\u202e", "~/x", "./x", "x/.", "." * 3, "/" * 5]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(template=st.sampled_from(KEY_TEMPLATES), title=st.one_of(st.sampled_from(HOSTILE), st.text(max_size=20)))
def test_manifest_keys_stay_inside(tmp_path: Path, template: str, title: str) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump({"job": "keys", "providers": ["sandbox"], "prompt": "p {{ id }}",
                                    "output": {"key": template}, "items": [{"id": "i1", "title": title}]}))
    try:
        loaded = load(path, load_settings(env={}))
    except InputError:
        return
    for spec in loaded.specs:
        _check_clean(spec.output_key)
        assert sanitize_key(spec.output_key) == spec.output_key
