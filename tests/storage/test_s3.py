"""S3Storage specifics over moto HTTP: object headers, bucket checks, error translation."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import boto3.session
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError, ReadTimeoutError

from pipeline.errors import StorageError
from pipeline.storage.factory import open_storage
from pipeline.storage.s3 import S3ClientOptions, S3Storage, make_s3_client, translate_error
from tests.fixtures.s3 import MotoServer

FAST = S3ClientOptions(connect_timeout_s=1.0, read_timeout_s=5.0, max_attempts=1)


def raw_client(endpoint: str) -> Any:
    return boto3.session.Session(
        aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1"
    ).client("s3", endpoint_url=endpoint)


def test_put_sets_content_type_and_metadata(s3_bucket: tuple[str, str], s3_env: dict[str, str]) -> None:
    endpoint, bucket = s3_bucket
    storage = open_storage(f"s3://{bucket}/out", env=s3_env)
    meta = {"job": "spring", "item": "sku-1", "Cache-Key": "ab" * 32, "provider": "google", "title": "Größe"}
    storage.put("sku-1.webp", b"RIFF....WEBP", "image/webp", meta)
    head = raw_client(endpoint).head_object(Bucket=bucket, Key="out/sku-1.webp")
    assert head["ContentType"] == "image/webp"
    assert head["ContentLength"] == 12
    assert head["Metadata"]["job"] == "spring"
    assert head["Metadata"]["item"] == "sku-1"
    assert head["Metadata"]["cache-key"] == "ab" * 32  # S3 keys are lower case
    assert head["Metadata"]["provider"] == "google"
    assert head["Metadata"]["title"] == "=?UTF-8?B?R3LDtsOfZQ==?="  # RFC 2047, as S3 itself stores it


def test_copy_is_server_side_and_keeps_headers(s3_bucket: tuple[str, str], s3_env: dict[str, str]) -> None:
    endpoint, bucket = s3_bucket
    storage = open_storage(f"s3://{bucket}/p", env=s3_env)
    storage.put("cache/k.png", b"png-bytes", "image/png", {"cache-key": "k"})
    assert storage.copy("cache/k.png", "jobs/j/i.png") == f"s3://{bucket}/p/jobs/j/i.png"
    head = raw_client(endpoint).head_object(Bucket=bucket, Key="p/jobs/j/i.png")
    assert head["ContentType"] == "image/png"
    assert head["Metadata"] == {"cache-key": "k"}


def test_bad_metadata_key_is_refused(s3_bucket: tuple[str, str], s3_env: dict[str, str]) -> None:
    storage = open_storage(f"s3://{s3_bucket[1]}", env=s3_env)
    with pytest.raises(ValueError):
        storage.put("a.png", b"x", "image/png", {"bad key": "v"})


def test_process_env_is_honoured(
    s3_bucket: tuple[str, str], s3_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in s3_env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    storage = open_storage(f"s3://{s3_bucket[1]}/env")  # env=None: boto3 reads AWS_ENDPOINT_URL_S3 itself
    storage.check()
    storage.put("a.png", b"x", "image/png", {})
    assert storage.get("a.png") == b"x"


def test_missing_bucket_is_permanent(s3_server: MotoServer, s3_env: dict[str, str]) -> None:
    storage = open_storage(f"s3://missing-{uuid.uuid4().hex[:12]}/p", env=s3_env)
    with pytest.raises(StorageError) as info:
        storage.check()
    assert not info.value.retryable
    assert "NoSuchBucket" in str(info.value)
    with pytest.raises(StorageError) as info:
        storage.put("a.png", b"x", "image/png", {})
    assert not info.value.retryable
    # HeadObject answers a bare 404 for a missing bucket too: exists() says False, check() is the guard
    assert not storage.exists("a.png")


def test_check_creates_bucket_when_asked(s3_server: MotoServer, s3_env: dict[str, str]) -> None:
    bucket = f"created-{uuid.uuid4().hex[:12]}"
    storage = open_storage(f"s3://{bucket}", env=s3_env, create_bucket=True)
    storage.check()
    storage.check()  # idempotent
    storage.put("a.png", b"x", "image/png", {})
    assert (
        raw_client(s3_server.endpoint_url).head_bucket(Bucket=bucket)["ResponseMetadata"]["HTTPStatusCode"]
        == 200
    )
    other = open_storage(f"s3://other-{uuid.uuid4().hex[:12]}", env=s3_env)
    assert isinstance(other, S3Storage)
    other.check(create_bucket=True)
    other.put("b.png", b"y", "image/png", {})


def test_check_creates_bucket_outside_us_east_1(s3_server: MotoServer, s3_env: dict[str, str]) -> None:
    env = {**s3_env, "AWS_DEFAULT_REGION": "eu-central-1"}
    storage = open_storage(f"s3://eu-{uuid.uuid4().hex[:12]}", env=env, create_bucket=True)
    storage.check()
    storage.put("a.png", b"x", "image/png", {})
    assert storage.get("a.png") == b"x"


def _stopped_storage(moto_server_factory: Callable[[], MotoServer], **env_extra: str) -> S3Storage:
    server = moto_server_factory()
    server.stop()
    env = {
        "AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE",
        "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_S3": server.endpoint_url,
        **env_extra,
    }
    return S3Storage("bucket", "p", make_s3_client(env=env, options=FAST))


def test_stopped_server_is_retryable_and_leaks_no_secret(
    moto_server_factory: Callable[[], MotoServer],
) -> None:
    storage = _stopped_storage(moto_server_factory)
    calls: list[Callable[[], object]] = [
        storage.check,
        lambda: storage.put("a.png", b"x", "image/png", {}),
        lambda: storage.get("a.png"),
        lambda: storage.exists("a.png"),
        lambda: storage.copy("a.png", "b.png"),
    ]
    for call in calls:
        with pytest.raises(StorageError) as info:
            call()
        assert info.value.retryable
        assert isinstance(info.value.__cause__, EndpointConnectionError)
        text = str(info.value)
        assert "wJalrXUtnFEMI" not in text and "AKIAIOSFODNN7EXAMPLE" not in text
        assert "s3://bucket" in text


def test_default_client_retries_then_translates(moto_server_factory: Callable[[], MotoServer]) -> None:
    server = moto_server_factory()
    server.stop()
    env = {"AWS_ACCESS_KEY_ID": "t", "AWS_SECRET_ACCESS_KEY": "t", "AWS_ENDPOINT_URL_S3": server.endpoint_url}
    storage = open_storage("s3://bucket/p", env=env)  # standard retries, 3 attempts
    started = time.monotonic()
    with pytest.raises(StorageError) as info:
        storage.put("a.png", b"x", "image/png", {})
    assert info.value.retryable
    assert time.monotonic() - started < 10


def test_server_back_after_restart(moto_server_factory: Callable[[], MotoServer]) -> None:
    server = moto_server_factory()
    env = {"AWS_ACCESS_KEY_ID": "t", "AWS_SECRET_ACCESS_KEY": "t", "AWS_ENDPOINT_URL_S3": server.endpoint_url}
    storage = S3Storage("bucket", "", make_s3_client(env=env, options=FAST), create_bucket=True)
    storage.check()
    server.stop()
    with pytest.raises(StorageError):
        storage.check(create_bucket=False)
    server.start()  # same port, empty state
    storage.check()
    storage.put("a.png", b"x", "image/png", {})
    assert storage.get("a.png") == b"x"


def _client_error(code: str, status: int, message: str = "m") -> ClientError:
    response: Any = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, "PutObject")


@pytest.mark.parametrize(
    ("code", "status", "retryable"),
    [
        ("AccessDenied", 403, False),
        ("NoSuchBucket", 404, False),
        ("NoSuchKey", 404, False),
        ("InvalidAccessKeyId", 403, False),
        ("SignatureDoesNotMatch", 403, False),
        ("EntityTooLarge", 400, False),
        ("SlowDown", 503, True),
        ("Throttling", 400, True),
        ("RequestTimeout", 400, True),
        ("InternalError", 500, True),
        ("BadGateway", 502, True),
        ("TooManyRequests", 429, True),
    ],
)
def test_client_error_classes(code: str, status: int, retryable: bool) -> None:
    error = translate_error(_client_error(code, status), "put", "s3://b/k")
    assert error.retryable is retryable
    assert code in str(error) and "s3 put s3://b/k" in str(error)


def test_translation_scrubs_credentials() -> None:
    message = "key AKIAIOSFODNN7EXAMPLE rejected at https://user:hunter2@example.com/x"
    error = translate_error(_client_error("AccessDenied", 403, message), "put", "s3://b/k")
    assert "AKIAIOSFODNN7EXAMPLE" not in str(error) and "hunter2" not in str(error)
    conn = EndpointConnectionError(endpoint_url="http://u:hunter2@h:1/b")
    error = translate_error(conn, "get", "s3://b/k", endpoint="http://u:hunter2@h:1")
    assert error.retryable and "hunter2" not in str(error)


def test_head_status_only_errors_get_names() -> None:
    forbidden = translate_error(_client_error("403", 403, ""), "check", "s3://b")
    assert "AccessDenied (HTTP 403)" in str(forbidden) and not forbidden.retryable
    missing = translate_error(_client_error("404", 404, ""), "check", "s3://b")
    assert "NoSuchBucket (HTTP 404)" in str(missing) and not missing.retryable


def test_other_botocore_errors() -> None:
    assert not translate_error(NoCredentialsError(), "put", "s3://b/k").retryable
    assert translate_error(ReadTimeoutError(endpoint_url="http://h"), "get", "s3://b/k").retryable
