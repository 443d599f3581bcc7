"""Presigned GET URLs: what a provider that takes references only by URL (Kie.ai) is handed, over moto's HTTP.

moto's server does not check signatures or expiry, so these tests check that the URL is a SigV4 query-signed
GET with the asked lifetime and that a plain GET (no credentials) gets the object; AWS enforces the rest."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from pipeline.storage.factory import open_storage
from pipeline.storage.spool import SpoolingStorage


def test_presigned_url_serves_the_object_without_credentials(s3_bucket: tuple[str, str],
                                                             s3_env: dict[str, str]) -> None:
    endpoint, bucket = s3_bucket
    storage = open_storage(f"s3://{bucket}/pre", env=s3_env)
    storage.put("refs/a.png", b"\x89PNG-bytes", "image/png", {})
    url = storage.presigned_url("refs/a.png", 300)
    assert url is not None and url.startswith(endpoint) and "/pre/refs/a.png" in url
    assert "X-Amz-Signature=" in url and "X-Amz-Expires=300" in url
    got = httpx.get(url)  # a plain GET: no AWS credentials, as the provider fetches it
    assert got.status_code == 200 and got.content == b"\x89PNG-bytes"
    query = parse_qs(urlsplit(url).query)
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"] and query["X-Amz-SignedHeaders"] == ["host"]
    assert "test/" in query["X-Amz-Credential"][0]  # the access key id, never the secret


def test_presigned_url_lifetime_is_bounded(s3_bucket: tuple[str, str], s3_env: dict[str, str]) -> None:
    storage = open_storage(f"s3://{s3_bucket[1]}", env=s3_env)
    with pytest.raises(ValueError):
        storage.presigned_url("b.png", 0)
    with pytest.raises(ValueError):
        storage.presigned_url("b.png", 8 * 24 * 3600)


def test_file_storage_has_no_presigned_url(tmp_path: Path) -> None:
    storage = open_storage(f"file://{tmp_path}")
    storage.put("a.png", b"x", "image/png", {})
    assert storage.presigned_url("a.png", 60) is None
    assert SpoolingStorage(storage, tmp_path / "spool").presigned_url("a.png", 60) is None
