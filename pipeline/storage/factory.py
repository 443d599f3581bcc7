"""`open_storage`: a storage URL (Settings.storage_url) to a backend. Parses only; the caller runs .check().

file://./output        FileStorage, relative to the current directory
file:///srv/images     FileStorage, absolute
s3://bucket            S3Storage, whole bucket
s3://bucket/a/prefix   S3Storage under a/prefix/
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import unquote, urlsplit

from pipeline.errors import InputError
from pipeline.storage.base import Storage
from pipeline.storage.keys import UnsafeKey, sanitize_key

_WHERE = "storage_url"
#: S3 bucket naming rules (3-63 chars, lower-case letters, digits, dots and hyphens)
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_USERINFO = re.compile(r"(//)[^/@]*@")


def open_storage(
    url: str,
    *,
    env: Mapping[str, str] | None = None,
    create_bucket: bool = False,
) -> Storage:
    """The backend for `url`. `env` feeds the S3 client (None: boto3 reads the process environment).

    `create_bucket` makes S3Storage.check() create a missing bucket (demo, tests, a fresh MinIO).
    Raises InputError(where="storage_url") for a URL it cannot use.
    """
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme == "file":
        return _file_storage(url, parts.netloc, parts.path)
    if scheme == "s3":
        from pipeline.storage.s3 import S3Storage, make_s3_client  # boto3 only when S3 is used

        bucket, prefix = _s3_location(parts.netloc, parts.path)
        if parts.query or parts.fragment:
            raise InputError(f"unexpected query or fragment in {_redact(url)!r}", where=_WHERE)
        return S3Storage(bucket, prefix, make_s3_client(env=env), create_bucket=create_bucket)
    raise InputError(
        f"unsupported storage URL {_redact(url)!r}: use file://DIR or s3://BUCKET/PREFIX", where=_WHERE
    )


def _file_storage(url: str, netloc: str, path: str) -> Storage:
    from pipeline.storage.local import FileStorage

    # file://./output parses as netloc "." + path "/output"; file://output as netloc "output"
    raw = unquote(path) if netloc in ("", "localhost") else unquote(netloc + path)
    if not raw or "\x00" in raw:
        raise InputError(
            f"no directory in {_redact(url)!r}: use file://./dir or file:///abs/dir", where=_WHERE
        )
    return FileStorage(Path(raw))


def _s3_location(netloc: str, path: str) -> tuple[str, str]:
    bucket = netloc
    if "@" in bucket or ":" in bucket:
        raise InputError(
            "credentials or a port do not belong in an s3:// URL: use AWS_* variables", where=_WHERE
        )
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise InputError(f"invalid S3 bucket name {bucket!r} in storage URL", where=_WHERE)
    prefix = unquote(path).strip("/")
    if prefix:
        try:
            sanitize_key(prefix)
        except UnsafeKey as exc:
            raise InputError(f"invalid S3 prefix {prefix!r}: {exc}", where=_WHERE) from exc
    return bucket, prefix


def _redact(url: str) -> str:
    """`url` without any user:password@ part, for error messages."""
    return _USERINFO.sub(r"\1***@", url)
