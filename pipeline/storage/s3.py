"""S3Storage: objects in an S3-compatible bucket (AWS, MinIO, moto) through boto3.

This module is the one place where botocore/boto3 exceptions become `pipeline.errors.StorageError`:
connection errors, timeouts, 5xx and throttling are retryable; AccessDenied, NoSuchBucket, missing
keys, bad credentials and other 4xx are not. Messages name the operation, the bucket and the key,
never credentials. The client is injected (built by `make_s3_client` at the composition root), so
the constructor does no I/O; `check()` is the explicit start step.
"""

from __future__ import annotations

import base64
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import boto3.session
from botocore import exceptions as bx
from botocore.config import Config

from pipeline.errors import InputError, StorageError
from pipeline.storage.keys import UnsafeKey, sanitize_key

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

T = TypeVar("T")

#: S3 error codes after which trying again later can help (besides any 5xx status)
RETRYABLE_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "SlowDown",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalError",
        "ServiceUnavailable",
        "OperationAborted",
    }
)

#: user metadata keys S3 accepts unchanged (they travel as x-amz-meta-<key> headers)
_META_KEY = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
#: anything that looks like an access key id, or credentials inside a URL, is cut from messages
_SCRUB = (
    (re.compile(r"\b(?:AKIA|ASIA|AIDA|AROA)[A-Z0-9]{12,}\b"), "<access-key-id>"),
    (re.compile(r"(//)[^/@\s]+@"), r"\1***@"),
)
#: what translate_error handles: everything botocore raises, and raw socket errors
_BOTO_ERRORS = (bx.BotoCoreError, bx.ClientError, OSError)
#: longest provider message kept in a StorageError
_MAX_MESSAGE_CHARS = 200
#: longest lifetime of a presigned URL (SigV4's limit: 7 days)
MAX_PRESIGN_S = 7 * 24 * 3600


@dataclass(frozen=True)
class S3ClientOptions:
    """How the boto3 client talks to S3. Every default written down."""

    #: seconds to open a TCP connection
    connect_timeout_s: float = 5.0
    #: seconds to wait for a response byte once the request is sent
    read_timeout_s: float = 60.0
    #: total attempts per call, botocore "standard" retry mode (connection errors, 5xx, throttling)
    max_attempts: int = 3
    #: HTTP connections kept per client (one client is shared by all worker threads)
    max_pool_connections: int = 32


def make_s3_client(
    *,
    env: Mapping[str, str] | None = None,
    options: S3ClientOptions | None = None,
) -> S3Client:
    """Build the boto3 S3 client. Local work only (no network).

    `env=None`: boto3 reads the standard AWS_* variables, AWS_ENDPOINT_URL_S3 and ~/.aws itself.
    `env` given: credentials, region, profile and endpoint are taken from it explicitly (what it does
    not name falls back to boto3's own chain).
    """
    opts = options or S3ClientOptions()
    config = Config(
        connect_timeout=opts.connect_timeout_s,
        read_timeout=opts.read_timeout_s,
        retries={"max_attempts": opts.max_attempts, "mode": "standard"},
        max_pool_connections=opts.max_pool_connections,
        # SigV4 everywhere, presigned URLs included (botocore may otherwise presign with the legacy SigV2)
        signature_version="s3v4",
    )
    try:
        if env is None:
            return boto3.session.Session().client("s3", config=config)
        session = boto3.session.Session(
            aws_access_key_id=env.get("AWS_ACCESS_KEY_ID") or None,
            aws_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY") or None,
            aws_session_token=env.get("AWS_SESSION_TOKEN") or None,
            region_name=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None,
            profile_name=env.get("AWS_PROFILE") or None,
        )
        endpoint_url = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None
        return session.client("s3", endpoint_url=endpoint_url, config=config)
    except (bx.BotoCoreError, ValueError) as exc:  # an unknown AWS_PROFILE, a bad endpoint URL or region
        raise InputError(f"cannot set up the S3 client: {_scrub(str(exc))}", where="AWS settings") from None


class S3Storage:
    """The `Storage` seam over one bucket and key prefix."""

    def __init__(self, bucket: str, prefix: str, client: S3Client, *, create_bucket: bool = False) -> None:
        if not bucket or "/" in bucket:
            raise ValueError(f"invalid bucket name: {bucket!r}")
        prefix = prefix.strip("/")
        self.bucket = bucket
        self.prefix = sanitize_key(prefix) if prefix else ""
        self.client = client
        #: whether check() creates a missing bucket (demo, tests, a fresh MinIO)
        self.create_bucket = create_bucket

    def __repr__(self) -> str:
        return f"S3Storage(bucket={self.bucket!r}, prefix={self.prefix!r})"

    # -- the Storage protocol ------------------------------------------------------------------

    def put(self, key: str, data: bytes, content_type: str, metadata: dict[str, str]) -> str:
        full = self._full_key(key)
        meta = encode_metadata(metadata)
        self._call(
            "put",
            full,
            lambda: self.client.put_object(
                Bucket=self.bucket, Key=full, Body=data, ContentType=content_type, Metadata=meta
            ),
        )
        return self._url(full)

    def copy(self, src_key: str, dst_key: str) -> str:
        src, dst = self._full_key(src_key), self._full_key(dst_key)
        self._call(
            "copy",
            f"{src} -> {dst}",
            lambda: self.client.copy_object(
                Bucket=self.bucket,
                Key=dst,
                CopySource={"Bucket": self.bucket, "Key": src},
                MetadataDirective="COPY",
            ),
        )
        return self._url(dst)

    def get(self, key: str) -> bytes:
        full = self._full_key(key)

        def read() -> bytes:
            body = self.client.get_object(Bucket=self.bucket, Key=full)["Body"]
            try:
                return body.read()
            finally:
                body.close()

        return self._call("get", full, read)

    def exists(self, key: str) -> bool:
        """HeadObject; any 404 is False (a missing bucket too: HEAD has no error body; check() finds that)."""
        full = self._full_key(key)
        try:
            self.client.head_object(Bucket=self.bucket, Key=full)
        except bx.ClientError as exc:
            if _status(exc) == 404 and _code(exc) != "NoSuchBucket":
                return False
            raise translate_error(exc, "exists", self._where(full), self._endpoint()) from exc
        except _BOTO_ERRORS as exc:
            raise translate_error(exc, "exists", self._where(full), self._endpoint()) from exc
        return True

    def url(self, key: str) -> str:
        return self._url(self._full_key(key))

    def check(self, *, create_bucket: bool | None = None) -> None:
        """HeadBucket; with `create_bucket` (default: the constructor's flag) a missing bucket is created."""
        create = self.create_bucket if create_bucket is None else create_bucket
        try:
            self.client.head_bucket(Bucket=self.bucket)
            return
        except bx.ClientError as exc:
            if not (create and _status(exc) == 404):
                raise translate_error(exc, "check", self._where(""), self._endpoint()) from exc
        except _BOTO_ERRORS as exc:
            raise translate_error(exc, "check", self._where(""), self._endpoint()) from exc
        self._call("create bucket", "", self._create_bucket)

    def check_location(self) -> None:
        """Nothing to check without the network: every key is confined to the prefix when it is built."""

    def presigned_url(self, key: str, expires_s: int = 300, content_type: str | None = None) -> str:
        """A SigV4 presigned GET URL for one object (signed locally by botocore: no request is made), valid for
        `expires_s` (S3 caps it at 7 days). Task APIs fetch references from it (Kie.ai); the review app sends
        browsers here instead of proxying the bytes (`content_type` sets the answer's Content-Type)."""
        if not 1 <= expires_s <= MAX_PRESIGN_S:
            raise ValueError(f"expires_s must be in 1..{MAX_PRESIGN_S}")
        full = self._full_key(key)
        params: dict[str, str] = {"Bucket": self.bucket, "Key": full}
        if content_type:
            params["ResponseContentType"] = content_type
        return self._call("presign", full, lambda: self.client.generate_presigned_url(
            "get_object", Params=params, ExpiresIn=int(expires_s)))

    # -- helpers ---------------------------------------------------------------------------------

    def _create_bucket(self) -> None:
        region = self.client.meta.region_name
        try:
            if region and region != "us-east-1":
                self.client.create_bucket(
                    Bucket=self.bucket,
                    CreateBucketConfiguration={"LocationConstraint": region},  # type: ignore[typeddict-item]
                )
            else:
                self.client.create_bucket(Bucket=self.bucket)
        except bx.ClientError as exc:
            if _code(exc) != "BucketAlreadyOwnedByYou":  # created meanwhile by another process
                raise

    def _full_key(self, key: str) -> str:
        key = sanitize_key(key)
        full = f"{self.prefix}/{key}" if self.prefix else key
        if self.prefix and not full.startswith(self.prefix + "/"):  # defence in depth
            raise UnsafeKey(f"storage key escapes the prefix: {key!r}")
        if ".." in full.split("/"):
            raise UnsafeKey(f"storage key escapes the prefix: {key!r}")
        return full

    def _url(self, full: str) -> str:
        return f"s3://{self.bucket}/{full}"

    def _where(self, full: str) -> str:
        return self._url(full) if full else f"s3://{self.bucket}"

    def _endpoint(self) -> str:
        return str(self.client.meta.endpoint_url)

    def _call(self, operation: str, full: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except _BOTO_ERRORS as exc:
            raise translate_error(exc, operation, self._where(full), self._endpoint()) from exc


def encode_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    """User metadata as S3 keeps it: lower-case keys; non-ASCII values RFC 2047 encoded (as S3 does)."""
    out: dict[str, str] = {}
    for key, value in metadata.items():
        name = key.lower()
        if not _META_KEY.match(name):
            raise ValueError(f"invalid S3 metadata key: {key!r}")
        if value.isascii() and value.isprintable():
            out[name] = value
        else:
            out[name] = "=?UTF-8?B?" + base64.b64encode(value.encode()).decode("ascii") + "?="
    return out


def translate_error(exc: BaseException, operation: str, where: str, endpoint: str = "") -> StorageError:
    """The botocore/boto3 exception `exc` as a StorageError (retryable or not). Never leaks credentials."""
    prefix = f"s3 {operation} {where}".rstrip()
    if isinstance(exc, bx.ClientError):
        code, status = _code(exc), _status(exc)
        retryable = status is not None and (status >= 500 or status in (408, 429))
        retryable = retryable or code in RETRYABLE_CODES
        if code.isdigit():  # HEAD answers carry no error body, only the status
            code = {403: "AccessDenied", 404: "NoSuchBucket" if operation == "check" else "NotFound"}.get(
                status or 0, code
            )
        detail = _scrub(str(exc.response.get("Error", {}).get("Message") or ""))[:_MAX_MESSAGE_CHARS]
        text = f"{prefix}: {code} (HTTP {status})" + (f": {detail}" if detail else "")
        return StorageError(text, retryable=retryable)
    if isinstance(exc, bx.NoCredentialsError | bx.PartialCredentialsError):
        return StorageError(f"{prefix}: no usable AWS credentials", retryable=False)
    if isinstance(exc, bx.SSLError):
        return StorageError(f"{prefix}: TLS error talking to {_scrub(endpoint)}", retryable=False)
    if isinstance(exc, bx.ConnectionError | bx.HTTPClientError | bx.IncompleteReadError):
        kind = type(exc).__name__
        return StorageError(f"{prefix}: {kind} talking to {_scrub(endpoint)}", retryable=True)
    if isinstance(exc, bx.BotoCoreError):
        return StorageError(f"{prefix}: {type(exc).__name__}", retryable=False)
    if isinstance(exc, OSError):  # socket errors that slipped past botocore's wrappers
        return StorageError(f"{prefix}: {type(exc).__name__} talking to {_scrub(endpoint)}", retryable=True)
    return StorageError(f"{prefix}: unexpected {type(exc).__name__}", retryable=False)


def _code(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Code") or "Unknown")


def _status(exc: Any) -> int | None:
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return int(status) if status is not None else None


def _scrub(text: str) -> str:
    for pattern, replacement in _SCRUB:
        text = pattern.sub(replacement, text)
    return text


class S3Reader:
    """Reads s3://bucket/key reference images from any bucket the AWS credentials allow, through one lazily
    built client (no I/O until the first read). Errors are translated here like every other S3 call."""

    def __init__(self, env: Mapping[str, str] | None = None, max_bytes: int = 20 * 1024 * 1024) -> None:
        self._env = env
        self._client: S3Client | None = None
        self._lock = threading.Lock()
        self.max_bytes = max_bytes

    def __call__(self, bucket: str, key: str) -> bytes:
        with self._lock:
            if self._client is None:
                self._client = make_s3_client(env=self._env)
            client = self._client
        try:
            body = client.get_object(Bucket=bucket, Key=key)["Body"]
            try:
                data: bytes = body.read(self.max_bytes + 1)
            finally:
                body.close()
        except _BOTO_ERRORS as exc:
            raise translate_error(exc, "get", f"s3://{bucket}/{key}") from exc
        if len(data) > self.max_bytes:
            raise StorageError(f"s3://{bucket}/{key}: larger than {self.max_bytes} bytes", retryable=False)
        return data
