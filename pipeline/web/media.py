"""Serving images from the configured storage only, by database id: the URL names an item (or a kept history
image) by number, the key comes from its row, and the key goes through the storage's own checks.

- S3: a redirect to a presigned GET URL (a few minutes long); the app never proxies the bytes.
- Files: the path FileStorage.path_of gives (sanitised key, inside the root, no symlink leading out of it).
A key that fails those checks, or an object that is not there, is a 404. Only image types are served as
such; anything else would be an attachment (and every media response is sandboxed by its CSP).
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from starlette.responses import FileResponse, PlainTextResponse, RedirectResponse, Response

from pipeline.errors import StorageError
from pipeline.storage.base import Storage
from pipeline.storage.keys import UnsafeKey
from pipeline.storage.local import FileStorage

log = logging.getLogger("pipeline.web")

#: image types served inline, by extension
CONTENT_TYPES = {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "webp": "image/webp"}
#: lifetime of a presigned S3 URL
PRESIGN_S = 300
_MEDIA_CSP = "default-src 'none'; sandbox"


def _inner(storage: Storage) -> Storage:
    inner: Storage = getattr(storage, "inner", storage)  # SpoolingStorage wraps the real backend
    return inner


def image_origins(storage: Storage) -> tuple[str, ...]:
    """Origins a page's images may be redirected to (the S3 endpoint's), for its Content-Security-Policy."""
    from pipeline.storage.s3 import S3Storage

    inner = _inner(storage)
    if not isinstance(inner, S3Storage):
        return ()
    try:
        parts = urlsplit(inner.presigned_url("_probe.png", 60))
    except StorageError:
        return ()
    return (f"{parts.scheme}://{parts.netloc}",)


def not_found() -> Response:
    return PlainTextResponse("not found", 404, headers={"content-security-policy": _MEDIA_CSP})


def media_response(storage: Storage, key: str | None) -> Response:
    """The response for one stored object, or 404."""
    if not key:
        return not_found()
    from pipeline.storage.s3 import S3Storage

    ext = key.rsplit(".", 1)[-1].lower() if "." in key else ""
    ctype = CONTENT_TYPES.get(ext)
    headers = {"content-security-policy": _MEDIA_CSP, "cache-control": "private, max-age=60"}
    if ctype is None:
        headers["content-disposition"] = "attachment"
    inner = _inner(storage)
    try:
        if isinstance(inner, S3Storage):
            return RedirectResponse(inner.presigned_url(key, PRESIGN_S, ctype), 302, headers=headers)
        if isinstance(inner, FileStorage):
            path = inner.path_of(key)
            if not path.is_file():
                return not_found()
            return FileResponse(path, media_type=ctype or "application/octet-stream", headers=headers)
        return Response(storage.get(key), media_type=ctype or "application/octet-stream", headers=headers)
    except UnsafeKey as e:
        log.warning("refused to serve a storage key: %s", e)
        return not_found()
    except StorageError:
        return not_found()
