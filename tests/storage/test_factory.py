"""open_storage: URL parsing only (no I/O), InputError for what it cannot use."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import InputError
from pipeline.storage.factory import open_storage
from pipeline.storage.local import FileStorage
from pipeline.storage.s3 import S3Storage


def test_relative_file_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for url in ("file://./output", "file://output", "file:output"):
        storage = open_storage(url)
        assert isinstance(storage, FileStorage)
        assert storage.root == tmp_path / "output"
    assert not (tmp_path / "output").exists()
    nested = open_storage("file://./a/b")
    assert isinstance(nested, FileStorage) and nested.root == tmp_path / "a" / "b"


def test_absolute_file_url(tmp_path: Path) -> None:
    for url in (f"file://{tmp_path}/out", f"file://localhost{tmp_path}/out", f"file://{tmp_path}/out/"):
        storage = open_storage(url)
        assert isinstance(storage, FileStorage)
        assert storage.root == tmp_path / "out"
    spaced = open_storage(f"file://{tmp_path}/my%20images")
    assert isinstance(spaced, FileStorage) and spaced.root == tmp_path / "my images"


def test_s3_urls_do_no_io() -> None:
    env = {
        "AWS_ACCESS_KEY_ID": "t",
        "AWS_SECRET_ACCESS_KEY": "t",
        "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9",
    }
    plain = open_storage("s3://my-bucket", env=env)  # port 9 is closed: any I/O would fail
    assert isinstance(plain, S3Storage) and (plain.bucket, plain.prefix) == ("my-bucket", "")
    prefixed = open_storage("s3://my-bucket/a/b/", env=env)
    assert isinstance(prefixed, S3Storage) and prefixed.prefix == "a/b"
    assert prefixed.url("x.png") == "s3://my-bucket/a/b/x.png"
    assert prefixed.client.meta.endpoint_url == "http://127.0.0.1:9"
    assert prefixed.client.meta.region_name  # boto3's default when none is configured


@pytest.mark.parametrize(
    "url",
    [
        "",
        "output",
        "/abs/path",
        "http://example.com/x",
        "gs://bucket/x",
        "file://",
        "s3://",
        "s3:///prefix",
        "s3://Bad_Bucket/x",
        "s3://ab/x",
        "s3://bucket/../x",
        "s3://bucket/a/../b",
        "s3://bucket/x?versioning=1",
        "s3://AKIAXXXX:hunter2@bucket/x",
        "s3://bucket:9000/x",
    ],
)
def test_invalid_urls(url: str) -> None:
    with pytest.raises(InputError) as info:
        open_storage(url, env={})
    assert info.value.where == "storage_url"
    assert "hunter2" not in str(info.value)
