"""Replicate's files API (replicate/replicate-python replicate/file.py; tests/cassettes/file-operations.yaml):
`POST /v1/files` (multipart, the file in field `content`, optional `metadata` JSON) answers 201 with a file
object `{id, name, content_type, size, etag, checksums: {sha256, md5}, metadata, created_at, expires_at,
urls: {get}}`; `GET /v1/files/{id}`, `GET /v1/files` (`{"results": [...]}`), `DELETE /v1/files/{id}` (204).
`urls.get` is what a prediction takes as an input URL; the sandbox resolves its own file URLs to their bytes,
so a reference passed by upload and one passed as a data URL are the same request."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import timedelta
from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pipeline.sandbox.files import Blob
from pipeline.sandbox.http import base_url, bearer_token, counted, json_response, provider_name, rfc3339
from pipeline.sandbox.state import Endpoint, SandboxState

#: files expire a day after upload (the cassette's expires_at is created_at + 24 h)
FILE_TTL = timedelta(hours=24)
#: largest upload accepted (replicate-javascript documents files up to 100 MB)
MAX_UPLOAD_BYTES = 100 * 1024 * 1024
_FILE_URL = re.compile(r"/v1/files/([a-z0-9]+)$")
PROBLEM_JSON = "application/problem+json"


def _file_id(request: Request) -> str:
    return str(request.path_params.get("file_id") or request.path_params.get("file_action") or "")


def file_id_of(url: str) -> str | None:
    """The sandbox file id in a `.../v1/files/{id}` URL, or None."""
    m = _FILE_URL.search(url)
    return m.group(1) if m else None


class ReplicateFiles:
    def __init__(self, state: SandboxState) -> None:
        self.state = state
        self.meta: dict[str, dict[str, Any]] = {}

    def routes(self) -> list[Route]:
        """`POST /v1/files`. GET and DELETE share their paths with the Gemini File API (`/v1/files...`):
        `claims` tells the app which of the two a request is for."""
        return [Route("/v1/files", self.create, methods=["POST"])]

    def claims(self, request: Request) -> bool:
        """Whether a `/{version}/files...` GET or DELETE is Replicate's: version v1, no Gemini key (header or
        `?key=`), and no provider prefix naming an endpoint of another protocol."""
        if request.path_params.get("version") != "v1":
            return False
        if request.headers.get("x-goog-api-key") or request.query_params.get("key"):
            return False
        return self.state.endpoint(provider_name(request), "replicate") is not None

    def blob(self, url: str) -> Blob | None:
        """The bytes behind one of this sandbox's file URLs."""
        file_id = file_id_of(url)
        return self.state.files.get(file_id) if file_id and file_id in self.meta else None

    def _problem(self, ep: Endpoint, status: int, title: str, detail: str) -> Response:
        body = {"title": title, "detail": detail, "status": status}
        return counted(self.state.ledger, ep, status, body, media_type=PROBLEM_JSON)

    def _admit(self, request: Request) -> Endpoint | Response:
        """The simulated provider a files request is for, or the answer refusing it (404 for a provider name of
        another protocol, Replicate's 401 for a key the profile does not accept)."""
        ep = self.state.endpoint(provider_name(request), "replicate")
        if ep is None:
            return json_response({"detail": "Not found.", "status": 404, "title": "Not found"}, 404)
        if not ep.accepts_key(bearer_token(request)):
            return self._problem(ep, 401, "Unauthenticated", "You did not pass a valid authentication token")
        return ep

    def _json(self, request: Request, blob: Blob) -> dict[str, Any]:
        meta = self.meta[blob.id]
        return {
            "id": blob.id, "name": blob.display_name, "content_type": blob.mime_type, "size": len(blob.data),
            "etag": meta["md5"], "checksums": {"sha256": meta["sha256"], "md5": meta["md5"]},
            "metadata": meta["metadata"], "created_at": rfc3339(blob.created),
            "expires_at": rfc3339(blob.created + FILE_TTL),
            "urls": {"get": f"{base_url(request)}/v1/files/{blob.id}"},
        }

    async def create(self, request: Request) -> Response:
        ep = self._admit(request)
        if isinstance(ep, Response):
            return ep
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            return self._problem(ep, 400, "Bad request", "Expected multipart/form-data with a 'content' file.")
        form = await request.form(max_files=1)
        upload = form.get("content")
        if not isinstance(upload, UploadFile):
            return self._problem(ep, 400, "Bad request", "Missing file field 'content'.")
        data = await upload.read()
        if len(data) > MAX_UPLOAD_BYTES:
            return self._problem(ep, 413, "Payload too large", f"Files are limited to {MAX_UPLOAD_BYTES} bytes.")
        raw_meta = form.get("metadata")
        try:
            metadata = json.loads(raw_meta) if isinstance(raw_meta, str) and raw_meta else {}
        except ValueError:
            return self._problem(ep, 400, "Bad request", "metadata must be a JSON object.")
        mime = upload.content_type or "application/octet-stream"
        blob = self.state.files.put(data, mime, display_name=upload.filename or "file", source="UPLOADED")
        self.meta[blob.id] = {"sha256": hashlib.sha256(data).hexdigest(), "md5": hashlib.md5(data).hexdigest(),
                              "metadata": metadata}
        return counted(self.state.ledger, ep, 201, self._json(request, blob))

    async def get(self, request: Request) -> Response:
        ep = self._admit(request)
        if isinstance(ep, Response):
            return ep
        blob = self.state.files.get(_file_id(request))
        if blob is None or blob.id not in self.meta:
            return self._problem(ep, 404, "Not found", "Not found.")
        return counted(self.state.ledger, ep, 200, self._json(request, blob))

    async def list(self, request: Request) -> Response:
        ep = self._admit(request)
        if isinstance(ep, Response):
            return ep
        blobs = [b for b in self.state.files.all() if b.id in self.meta]
        body = {"next": None, "previous": None, "results": [self._json(request, b) for b in blobs]}
        return counted(self.state.ledger, ep, 200, body)

    async def delete(self, request: Request) -> Response:
        ep = self._admit(request)
        if isinstance(ep, Response):
            return ep
        file_id = _file_id(request)
        if file_id not in self.meta or not self.state.files.delete(file_id):
            return self._problem(ep, 404, "Not found", "Not found.")
        del self.meta[file_id]
        return counted(self.state.ledger, ep, 204, content=b"", media_type=None)
