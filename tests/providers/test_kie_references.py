"""How references become URLs for Kie.ai: presigned GET URLs from S3 storage (moto over HTTP), Kie's upload API
with file storage, and nothing (a clear error) when neither can work."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest

from pipeline.errors import InvalidRequest, ProviderUnavailable
from pipeline.providers.base import Reference
from pipeline.providers.kie_refs import KieUploads, PresignedReferences, reference_host
from pipeline.storage.factory import open_storage
from tests.providers.kie_helpers import KieStub, capture, reply
from tests.providers.provider_wire import KEY, config, image_bytes


def ref(w: int = 12, h: int = 10) -> Reference:
    data = image_bytes(w, h)
    return Reference(data=data, mime_type="image/png", sha256=hashlib.sha256(data).hexdigest())


def uploads_stub() -> KieStub:
    return KieStub().on("/api/file-base64-upload", reply(capture("file-base64-upload.ok")))


def test_s3_storage_puts_a_reference_once_and_passes_a_working_presigned_url(
        s3_bucket: tuple[str, str], s3_env: dict[str, str]) -> None:
    storage = open_storage(f"s3://{s3_bucket[1]}/p", env=s3_env)
    stub = uploads_stub()
    host = reference_host(config("kie"), storage=storage, client=stub.client(), api_key=KEY)
    assert isinstance(host, PresignedReferences)
    r = ref()
    url = host.url_for(r)
    assert "X-Amz-Signature=" in url and f"p/provider-references/{r.sha256}.png" in url
    assert httpx.get(url).content == r.data
    assert host.url_for(r) == url and stub.requests == []  # reused; Kie's upload API never used


def test_file_storage_uses_kies_upload_api_and_writes_nothing_locally(tmp_path: Path) -> None:
    storage = open_storage(f"file://{tmp_path / 'out'}")
    stub = uploads_stub()
    host = reference_host(config("kie"), storage=storage, client=stub.client(), api_key=KEY)
    assert host is not None
    assert host.url_for(ref()) == capture("file-base64-upload.ok").expect["file_url"]
    assert len(stub.requests) == 1 and not (tmp_path / "out").exists()


def test_without_a_way_references_are_refused_before_anything_is_sent(tmp_path: Path) -> None:
    stub = KieStub()
    cfg = config("kie", upload_base_url=None)
    assert reference_host(cfg, storage=None, client=stub.client(), api_key=KEY) is None
    host = reference_host(cfg, storage=open_storage(f"file://{tmp_path}"), client=stub.client(), api_key=KEY)
    assert host is not None
    with pytest.raises(InvalidRequest, match="S3 storage or upload_base_url"):
        host.url_for(ref())
    assert stub.requests == []
    uploads = reference_host(config("kie"), storage=None, client=stub.client(), api_key=KEY)
    assert isinstance(uploads, KieUploads)


def test_storage_faults_are_not_billed_and_say_whether_to_retry(s3_env: dict[str, str],
                                                                s3_bucket: tuple[str, str]) -> None:
    missing = open_storage("s3://no-such-bucket-kie-refs/p", env=s3_env)
    with pytest.raises(InvalidRequest) as info:  # NoSuchBucket: configuration, trying again cannot help
        PresignedReferences(missing, 60, provider="kie").url_for(ref())
    assert info.value.error_class == "reference" and not info.value.maybe_billed
    down = open_storage(f"s3://{s3_bucket[1]}", env={**s3_env, "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9"})
    with pytest.raises(ProviderUnavailable) as info2:  # unreachable: retried later
        PresignedReferences(down, 60, provider="kie").url_for(ref())
    assert info2.value.retryable and not info2.value.maybe_billed
