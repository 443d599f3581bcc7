"""In-memory blobs served by the sandbox: output images behind URLs and Gemini File API files.

Bounded by total bytes; the oldest blobs go first, as a provider's short retention would drop them.
"""

from __future__ import annotations

import secrets
import string
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime

from pipeline.clock import utcnow

#: default bound of the in-memory store
DEFAULT_MAX_BYTES = 1 << 30
_ID_CHARS = string.ascii_lowercase + string.digits


def new_id(length: int = 24) -> str:
    return "".join(secrets.choice(_ID_CHARS) for _ in range(length))


@dataclass(frozen=True)
class Blob:
    id: str
    data: bytes
    mime_type: str
    display_name: str = ""
    #: "UPLOADED" or "GENERATED" (Gemini File API `source`), or "OUTPUT" (an image served by URL)
    source: str = "OUTPUT"
    created: datetime = field(default_factory=utcnow)


class FileStore:
    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._blobs: OrderedDict[str, Blob] = OrderedDict()
        self._bytes = 0

    def put(self, data: bytes, mime_type: str, *, display_name: str = "", source: str = "OUTPUT") -> Blob:
        blob = Blob(new_id(), data, mime_type, display_name=display_name, source=source)
        with self._lock:
            self._blobs[blob.id] = blob
            self._bytes += len(data)
            while self._bytes > self.max_bytes and len(self._blobs) > 1:
                _, old = self._blobs.popitem(last=False)
                self._bytes -= len(old.data)
        return blob

    def get(self, blob_id: str) -> Blob | None:
        with self._lock:
            return self._blobs.get(blob_id)

    def delete(self, blob_id: str) -> bool:
        with self._lock:
            blob = self._blobs.pop(blob_id, None)
            if blob is not None:
                self._bytes -= len(blob.data)
        return blob is not None

    def all(self) -> list[Blob]:
        with self._lock:
            return list(self._blobs.values())
