"""Gemini File API, as far as batch jobs need it: the resumable upload, file metadata, download, delete.

Upload (SDK `files.upload`): `POST /upload/{version}/files` with `X-Goog-Upload-Command: start` answers with
an `x-goog-upload-url` header; then `POST` to that URL with `upload` / `upload, finalize` commands and
`X-Goog-Upload-Offset`, answered with `x-goog-upload-status: active` / `final` (and the file on final).
Download: `GET /{version}/files/{id}:download?alt=media` (also under `/download/{version}/...`).
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pipeline.sandbox.files import Blob, new_id
from pipeline.sandbox.gemini import GeminiBase
from pipeline.sandbox.gemini_wire import error_body
from pipeline.sandbox.http import base_url, counted, read_json, rfc3339
from pipeline.sandbox.state import SandboxState

#: files expire after this long (File API: 48 hours)
FILE_TTL = timedelta(hours=48)


@dataclass
class UploadSession:
    display_name: str
    mime_type: str
    declared_size: int | None
    data: bytearray = field(default_factory=bytearray)


def _bad(message: str) -> dict[str, Any]:
    return error_body(400, "INVALID_ARGUMENT", message)


class GeminiFiles(GeminiBase):
    def __init__(self, state: SandboxState) -> None:
        super().__init__(state)
        self.uploads: dict[str, UploadSession] = {}

    def routes(self) -> list[Route]:
        return [
            Route("/upload/{version}/files", self.upload, methods=["POST"]),
            Route("/{version}/files", self.list_files, methods=["GET"]),
            Route("/{version}/files/{file_action}", self.get_file, methods=["GET"]),
            Route("/download/{version}/files/{file_action}", self.get_file, methods=["GET"]),
            Route("/{version}/files/{file_action}", self.delete_file, methods=["DELETE"]),
        ]

    # -- helpers used by the batch API -----------------------------------------------------------------------

    def get(self, file_name: str) -> Blob | None:
        return self.state.files.get(file_name.removeprefix("files/"))

    def store_generated(self, data: bytes, mime_type: str, display_name: str) -> str:
        """Store a file the service made (batch output) and return its name, `files/<id>`."""
        blob = self.state.files.put(data, mime_type, display_name=display_name, source="GENERATED")
        return f"files/{blob.id}"

    def file_json(self, request: Request, blob: Blob) -> dict[str, Any]:
        version = request.path_params.get("version", "v1beta")
        uri = f"{base_url(request)}/{version}/files/{blob.id}"
        body: dict[str, Any] = {
            "name": f"files/{blob.id}",
            "displayName": blob.display_name,
            "mimeType": blob.mime_type,
            "sizeBytes": str(len(blob.data)),
            "createTime": rfc3339(blob.created),
            "updateTime": rfc3339(blob.created),
            "expirationTime": rfc3339(blob.created + FILE_TTL),
            "sha256Hash": base64.b64encode(hashlib.sha256(blob.data).hexdigest().encode()).decode(),
            "uri": uri,
            "state": "ACTIVE",
            "source": blob.source,
        }
        if blob.source == "GENERATED":
            body["downloadUri"] = f"{uri}:download?alt=media"
        return body

    protocol = "gemini-batch"

    # -- routes ----------------------------------------------------------------------------------------------

    async def upload(self, request: Request) -> Response:
        ep = self.admit(request)
        if isinstance(ep, Response):
            return ep
        command = request.headers.get("x-goog-upload-command", "").replace(" ", "").lower()
        upload_id = request.query_params.get("upload_id")
        if command == "start":
            try:
                body = await read_json(request)
            except ValueError:
                return self.answer(ep, 400, _bad("Invalid JSON payload received."))
            meta = body.get("file", {}) if isinstance(body, dict) else {}
            size = request.headers.get("x-goog-upload-header-content-length")
            session = UploadSession(
                display_name=str(meta.get("displayName") or meta.get("display_name") or ""),
                mime_type=request.headers.get("x-goog-upload-header-content-type")
                or str(meta.get("mimeType") or "application/octet-stream"),
                declared_size=int(size) if size and size.isdigit() else None,
            )
            upload_id = new_id(32)
            self.uploads[upload_id] = session
            version = request.path_params["version"]
            url = (
                f"{base_url(request)}/upload/{version}/files?upload_id={upload_id}&upload_protocol=resumable"
            )
            headers = {"x-goog-upload-url": url, "x-goog-upload-status": "active"}
            return counted(self.state.ledger, ep, 200, content=b"", headers=headers)
        pending = self.uploads.get(upload_id or "")
        if pending is None or not command.startswith("upload"):
            return self.answer(ep, 400, _bad("Unknown upload session or command."))
        session = pending
        offset = request.headers.get("x-goog-upload-offset", "0")
        if not offset.isdigit() or int(offset) != len(session.data):
            return self.answer(ep, 400, _bad(f"Upload offset {offset} does not match {len(session.data)}."))
        session.data += await request.body()
        if "finalize" not in command:
            return counted(self.state.ledger, ep, 200, content=b"", headers={"x-goog-upload-status": "active"})
        del self.uploads[upload_id or ""]
        blob = self.state.files.put(
            bytes(session.data), session.mime_type, display_name=session.display_name, source="UPLOADED"
        )
        return self.answer(
            ep, 200, {"file": self.file_json(request, blob)}, headers={"x-goog-upload-status": "final"}
        )

    async def get_file(self, request: Request) -> Response:
        ep = self.admit(request)
        if isinstance(ep, Response):
            return ep
        file_id, _, action = str(request.path_params["file_action"]).partition(":")
        blob = self.state.files.get(file_id)
        if blob is None or action not in ("", "download"):
            return self.missing(ep)
        if action == "download" or request.query_params.get("alt") == "media":
            return counted(self.state.ledger, ep, 200, content=blob.data, media_type=blob.mime_type)
        return self.answer(ep, 200, self.file_json(request, blob))

    async def delete_file(self, request: Request) -> Response:
        ep = self.admit(request)
        if isinstance(ep, Response):
            return ep
        if self.state.files.delete(str(request.path_params["file_action"])):
            return self.answer(ep, 200, {})
        return self.missing(ep)

    async def list_files(self, request: Request) -> Response:
        ep = self.admit(request)
        if isinstance(ep, Response):
            return ep
        files = [self.file_json(request, b) for b in self.state.files.all() if b.source != "OUTPUT"]
        return self.answer(ep, 200, {"files": files})
