"""The Storage contract, run over every backend: FileStorage in tmp_path, S3Storage over moto HTTP."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import boto3.session
import pytest

from pipeline.errors import StorageError
from pipeline.storage.base import Storage
from pipeline.storage.factory import open_storage
from pipeline.storage.keys import UnsafeKey

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8


@dataclass
class Backend:
    name: str
    storage: Storage
    #: the raw object (bytes) at a full path below the bucket / root, bypassing the backend
    raw: Callable[[str], bytes | None]
    #: what url(key) must be
    expected_url: Callable[[str], str]


def _file_backend(tmp_path: Path) -> Backend:
    root = tmp_path / "out"

    def raw(full: str) -> bytes | None:
        path = tmp_path / full
        return path.read_bytes() if path.is_file() else None

    return Backend(
        "file",
        open_storage(f"file://{root}"),
        raw=lambda key: raw(f"out/{key}"),
        expected_url=lambda key: (root / key).as_uri(),
    )


def _s3_backend(s3_bucket: tuple[str, str], s3_env: dict[str, str]) -> Backend:
    endpoint, bucket = s3_bucket
    client = boto3.session.Session(
        aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1"
    ).client("s3", endpoint_url=endpoint)

    def raw(full: str) -> bytes | None:
        try:
            return client.get_object(Bucket=bucket, Key=full)["Body"].read()
        except client.exceptions.NoSuchKey:
            return None

    return Backend(
        "s3",
        open_storage(f"s3://{bucket}/renders/v1", env=s3_env),
        raw=lambda key: raw(f"renders/v1/{key}"),
        expected_url=lambda key: f"s3://{bucket}/renders/v1/{key}",
    )


@pytest.fixture(params=["file", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "file":
        b = _file_backend(tmp_path)
    else:
        b = _s3_backend(request.getfixturevalue("s3_bucket"), request.getfixturevalue("s3_env"))
    b.storage.check()
    return b


def test_put_get_round_trip(backend: Backend) -> None:
    storage = backend.storage
    assert not storage.exists("catalogue/sku-1.png")
    url = storage.put("catalogue/sku-1.png", PNG, "image/png", {"job": "j1", "item": "sku-1"})
    assert url == storage.url("catalogue/sku-1.png") == backend.expected_url("catalogue/sku-1.png")
    assert storage.get("catalogue/sku-1.png") == PNG
    assert storage.exists("catalogue/sku-1.png")
    assert backend.raw("catalogue/sku-1.png") == PNG  # stored under the prefix / root


def test_empty_object_round_trip(backend: Backend) -> None:
    backend.storage.put("empty.bin", b"", "application/octet-stream", {})
    assert backend.storage.get("empty.bin") == b""
    assert backend.storage.exists("empty.bin")


def test_overwrite_replaces_content(backend: Backend) -> None:
    storage = backend.storage
    storage.put("a.png", b"first", "image/png", {})
    storage.put("a.png", b"second, longer", "image/png", {})
    assert storage.get("a.png") == b"second, longer"


def test_copy_then_overwrite_source_leaves_copy(backend: Backend) -> None:
    storage = backend.storage
    storage.put("cache/ab/abcd.png", PNG, "image/png", {"cache-key": "abcd"})
    url = storage.copy("cache/ab/abcd.png", "jobs/j1/sku-2.png")
    assert url == backend.expected_url("jobs/j1/sku-2.png")
    assert storage.get("jobs/j1/sku-2.png") == PNG
    storage.put("cache/ab/abcd.png", b"changed", "image/png", {})
    assert storage.get("jobs/j1/sku-2.png") == PNG
    storage.copy("cache/ab/abcd.png", "jobs/j1/sku-2.png")  # copy overwrites too
    assert storage.get("jobs/j1/sku-2.png") == b"changed"


def test_missing_object_is_a_permanent_error(backend: Backend) -> None:
    with pytest.raises(StorageError) as info:
        backend.storage.get("nope/missing.png")
    assert not info.value.retryable
    with pytest.raises(StorageError) as info:
        backend.storage.copy("nope/missing.png", "elsewhere.png")
    assert not info.value.retryable
    assert not backend.storage.exists("elsewhere.png")


def test_deep_and_unicode_keys(backend: Backend) -> None:
    key = "jobs/spring catalogue/größe/sku 1.png"
    backend.storage.put(key, PNG, "image/png", {})
    assert backend.storage.get(key) == PNG
    assert backend.raw(key) == PNG


def test_repeated_slashes_are_normalised(backend: Backend) -> None:
    backend.storage.put("a//b.png", PNG, "image/png", {})
    assert backend.storage.get("a/b.png") == PNG
    assert backend.storage.url("a//b.png") == backend.expected_url("a/b.png")


UNSAFE_KEYS = [
    "",
    "../escape.png",
    "a/../../escape.png",
    "a/..",
    "/etc/passwd",
    "a\\b.png",
    "a\x00b",
    "a/\nb",
    "./a",
]


@pytest.mark.parametrize("key", UNSAFE_KEYS)
def test_unsafe_keys_are_refused_everywhere(backend: Backend, key: str) -> None:
    storage = backend.storage
    storage.put("safe.png", PNG, "image/png", {})
    for call in (
        lambda: storage.put(key, PNG, "image/png", {}),
        lambda: storage.get(key),
        lambda: storage.exists(key),
        lambda: storage.url(key),
        lambda: storage.copy("safe.png", key),
        lambda: storage.copy(key, "other.png"),
    ):
        with pytest.raises(UnsafeKey):
            call()
    assert not storage.exists("other.png")


def test_url_points_at_the_object(backend: Backend) -> None:
    url = backend.storage.put("x/y.png", PNG, "image/png", {})
    parts = urlsplit(url)
    if backend.name == "file":
        assert parts.scheme == "file" and parts.netloc == ""
        assert Path(unquote(parts.path)).read_bytes() == PNG
    else:
        assert parts.scheme == "s3"
        assert backend.raw("x/y.png") == PNG
        assert parts.path == "/renders/v1/x/y.png"


def test_prefix_confinement_s3(s3_bucket: tuple[str, str], s3_env: dict[str, str]) -> None:
    _endpoint, bucket = s3_bucket
    outer = open_storage(f"s3://{bucket}", env=s3_env)
    inner = open_storage(f"s3://{bucket}/tenant-a/", env=s3_env)
    outer.put("secret.png", b"outside", "image/png", {})
    inner.put("img.png", PNG, "image/png", {})
    assert outer.get("tenant-a/img.png") == PNG
    assert not inner.exists("secret.png")
    with pytest.raises(UnsafeKey):
        inner.get("../secret.png")
    assert inner.url("img.png") == f"s3://{bucket}/tenant-a/img.png"


def test_prefix_confinement_file(tmp_path: Path) -> None:
    (tmp_path / "secret.png").write_bytes(b"outside")
    storage = open_storage(f"file://{tmp_path}/root")
    with pytest.raises(UnsafeKey):
        storage.get("../secret.png")
    storage.put("img.png", PNG, "image/png", {})
    assert (tmp_path / "root" / "img.png").read_bytes() == PNG
