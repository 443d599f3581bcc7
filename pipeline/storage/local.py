"""FileStorage: objects as files under one root directory (`file://dir` storage URLs).

Writes are atomic (temp file in the target directory, fsync, os.replace, fsync of the directory), so a
reader or a crash never sees half an image. Nothing is ever written outside the root: a key whose path leads
out through a symbolic link is refused (UnsafeLocation, a permanent StorageError naming the link), and
`check()` / `check_location()` refuse a root that holds such a link, or whose `_cache` or `_thumbs` is a link,
before any provider is paid (validate, submit, worker start). `copy` hard-links when source and destination share a
filesystem and copies otherwise. Content type and metadata are not kept (no sidecar): the extension
of the key says what the file is.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from pipeline.errors import StorageError
from pipeline.storage.keys import UnsafeKey, sanitize_key

#: errno values after which trying again later cannot help
_PERMANENT_ERRNOS = frozenset(
    {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ENAMETOOLONG}
)

#: errno values on which os.link cannot work and copy() falls back to copying bytes
_NO_LINK_ERRNOS = frozenset({errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EACCES})

_TMP_PREFIX = ".tmp-"
#: directories of the pipeline's own objects under the root: they may not be links at all
OWN_DIRS = ("_cache", "_thumbs")


class UnsafeLocation(StorageError, UnsafeKey):
    """Storing here would leave the root (a symbolic link leads outside it): refused for good, not retryable."""

    def __init__(self, message: str) -> None:
        StorageError.__init__(self, message, retryable=False)


class FileStorage:
    """The `Storage` seam over a local directory. The root is made absolute now, created on first put."""

    def __init__(self, root: Path) -> None:
        # abspath, not resolve(): no filesystem access in the constructor
        self.root = Path(os.path.abspath(root))

    def __repr__(self) -> str:
        return f"FileStorage(root={str(self.root)!r})"

    # -- the Storage protocol ------------------------------------------------------------------

    def put(self, key: str, data: bytes, content_type: str, metadata: dict[str, str]) -> str:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._path(key)  # re-check now that the directories exist (symlinked parents)
            atomic_write(path, data)
        except OSError as exc:
            raise _translate(exc, "put", key) from exc
        return self.url(key)

    def copy(self, src_key: str, dst_key: str) -> str:
        src, dst = self._path(src_key), self._path(dst_key)
        try:
            dst.parent.mkdir(parents=True, exist_ok=True)
            self._path(dst_key)
            if dst.exists() and os.path.samefile(src, dst):
                return self.url(dst_key)  # already a link to the same file
            tmp = _temp_name(dst)
            try:
                try:
                    os.link(src, tmp)
                except OSError as exc:
                    if exc.errno not in _NO_LINK_ERRNOS:
                        raise
                    _copy_file_durably(src, tmp)
                os.replace(tmp, dst)
                # rename() of two links to one file does nothing and leaves the temporary name behind
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
            _fsync_dir(dst.parent)
        except OSError as exc:
            raise _translate(exc, "copy", src_key if isinstance(exc, FileNotFoundError) else dst_key) from exc
        return self.url(dst_key)

    def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except OSError as exc:
            raise _translate(exc, "get", key) from exc

    def exists(self, key: str) -> bool:
        path = self._path(key)
        try:
            return path.is_file()
        except OSError as exc:  # pragma: no cover - is_file() swallows most errors itself
            raise _translate(exc, "exists", key) from exc

    def url(self, key: str) -> str:
        return self._path(key, resolve=False).as_uri()

    def presigned_url(self, key: str, expires_s: int) -> None:
        """Files have no URL another host can fetch: None (callers use another way, or refuse up front)."""
        return None

    def check(self) -> None:
        """Refuse an unsafe root (`check_location`), create the root if needed and make sure it is a writable
        directory."""
        self.check_location()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.root, prefix=_TMP_PREFIX):
                pass
        except OSError as exc:
            raise _translate(exc, "check", "") from exc

    def check_location(self) -> None:
        """Raise UnsafeLocation when storing under the root could leave it: `_cache` or `_thumbs` is a symbolic
        link, or a symbolic link anywhere under the root points outside it (dangling ones included). Reads only;
        a root that does not exist yet is fine. Walks the whole tree once (os.scandir, links are not followed):
        about a second per million entries."""
        try:
            real_root = Path(os.path.realpath(self.root))
            if not real_root.exists():
                return
            if not real_root.is_dir():
                raise StorageError(f"file storage root {str(self.root)!r} is not a directory", retryable=False)
            for name in OWN_DIRS:
                if os.path.islink(real_root / name):
                    raise UnsafeLocation(f"file storage root {str(self.root)!r}: {name} is a symbolic link "
                                         f"(to {os.readlink(real_root / name)!r}); the pipeline's own objects "
                                         "must live inside the root: replace the link by a directory")
            for link, target in _links(real_root):
                if not _inside(target, real_root):
                    raise UnsafeLocation(f"file storage root {str(self.root)!r}: the symbolic link "
                                         f"{os.path.relpath(link, real_root)!r} leads outside it (to "
                                         f"{str(target)!r}); remove it or point the storage URL elsewhere")
        except OSError as exc:
            raise _translate(exc, "check", "") from exc

    def path_of(self, key: str) -> Path:
        """The file that holds `key`, checked like every other access (sanitised key, inside the root, no
        symlink out of it): what the review app serves. Raises UnsafeKey."""
        return self._path(key)

    # -- keys to paths ---------------------------------------------------------------------------

    def _path(self, key: str, *, resolve: bool = True) -> Path:
        """The file for `key`; refuses keys (and symlinks on the way) that lead outside the root."""
        key = sanitize_key(key)
        path = self.root.joinpath(*key.split("/"))
        if not path.is_relative_to(self.root):
            raise UnsafeKey(f"storage key escapes the root: {key!r}")
        if resolve:
            real_root = self.root.resolve()
            real = path.resolve()
            if real != real_root and not real.is_relative_to(real_root):
                raise UnsafeLocation(f"storage key {key!r} leads outside the file storage root through a "
                                     f"symbolic link (to {str(real)!r})")
            top = key.split("/", 1)[0]
            if top in OWN_DIRS and os.path.islink(real_root / top):
                raise UnsafeLocation(f"storage key {key!r}: {top} is a symbolic link under the file storage root")
        return path


def _links(root: Path) -> Iterator[tuple[str, Path]]:
    """(link path, resolved target) of every symbolic link under `root`, without following any."""
    stack = [str(root)]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                if entry.is_symlink():
                    yield entry.path, Path(os.path.realpath(entry.path))
                elif entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)


def _inside(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that the path holds either the old or the whole new content."""
    tmp = _temp_name(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _temp_name(path: Path) -> Path:
    return path.with_name(f"{_TMP_PREFIX}{path.name}.{os.getpid()}.{os.urandom(6).hex()}")


def _copy_file_durably(src: Path, dst: Path) -> None:
    with open(src, "rb") as fsrc, open(dst, "xb") as fdst:
        shutil.copyfileobj(fsrc, fdst)
        fdst.flush()
        os.fsync(fdst.fileno())


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some filesystems refuse fsync on directories
        pass
    finally:
        os.close(fd)


def _translate(exc: OSError, operation: str, key: str) -> StorageError:
    if isinstance(exc, FileNotFoundError) and operation in ("get", "copy"):
        return StorageError(f"file {operation}: no object at key {key!r}", retryable=False)
    retryable = exc.errno not in _PERMANENT_ERRNOS
    reason = exc.strerror or type(exc).__name__
    where = f" key {key!r}" if key else ""
    return StorageError(f"file {operation}{where} failed: {reason}", retryable=retryable)
