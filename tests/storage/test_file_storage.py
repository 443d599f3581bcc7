"""FileStorage specifics: no I/O at construction, atomic writes, hard links, symlink escapes."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from pipeline.errors import StorageError
from pipeline.storage.keys import UnsafeKey
from pipeline.storage.local import FileStorage


def test_relative_root_resolves_against_cwd_at_construction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    storage = FileStorage(Path("output"))
    assert storage.root == tmp_path / "output"
    assert not (tmp_path / "output").exists()  # nothing created before a put
    monkeypatch.chdir("/")
    storage.put("a/b.png", b"x", "image/png", {})
    assert (tmp_path / "output" / "a" / "b.png").read_bytes() == b"x"


def test_check_creates_root_and_fails_on_a_file(tmp_path: Path) -> None:
    FileStorage(tmp_path / "new" / "root").check()
    assert (tmp_path / "new" / "root").is_dir()
    (tmp_path / "plain").write_bytes(b"")
    with pytest.raises(StorageError) as info:
        FileStorage(tmp_path / "plain").check()
    assert not info.value.retryable


def test_put_leaves_no_temp_files(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path)
    for i in range(5):
        storage.put("d/x.png", bytes([i]) * 1000, "image/png", {})
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["x.png"]


def test_concurrent_overwrites_never_show_a_torn_file(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path)
    blobs = [bytes([i]) * 200_000 for i in range(8)]
    storage.put("k.png", blobs[0], "image/png", {})
    seen: list[bytes] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            seen.append(storage.get("k.png"))

    thread = threading.Thread(target=reader)
    thread.start()
    writers = [threading.Thread(target=storage.put, args=("k.png", b, "image/png", {})) for b in blobs * 3]
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    stop.set()
    thread.join()
    assert seen and all(data in blobs for data in seen)


def test_copy_hard_links_on_the_same_filesystem(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path)
    storage.put("cache/a.png", b"abc", "image/png", {})
    storage.copy("cache/a.png", "jobs/j/a.png")
    src, dst = tmp_path / "cache/a.png", tmp_path / "jobs/j/a.png"
    assert src.stat().st_ino == dst.stat().st_ino
    storage.put("cache/a.png", b"new", "image/png", {})  # a put replaces the inode: the copy keeps its bytes
    assert dst.read_bytes() == b"abc"


def test_copy_across_filesystems_copies(tmp_path: Path) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("no second filesystem to copy across")
    other = shm / f"storage-test-{os.getpid()}"
    other.mkdir()
    try:
        (tmp_path / "root").mkdir()
        (tmp_path / "root" / "mnt").symlink_to(other)  # a symlink out of the root is refused ...
        storage = FileStorage(tmp_path / "root")
        storage.put("a.png", b"abc", "image/png", {})
        with pytest.raises(UnsafeKey):
            storage.copy("a.png", "mnt/a.png")
        storage2 = FileStorage(other)  # ... so copy within a root on another device
        (other / "src.png").write_bytes(b"abc")
        storage2.copy("src.png", "dst.png")
        assert (other / "dst.png").read_bytes() == b"abc"
    finally:
        for p in sorted(other.rglob("*"), reverse=True):
            p.unlink()
        other.rmdir()


def test_symlink_escape_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes(b"secret")
    root = tmp_path / "root"
    root.mkdir()
    (root / "link").symlink_to(outside)
    (root / "file-link.png").symlink_to(outside / "secret.png")
    storage = FileStorage(root)
    for call in (
        lambda: storage.put("link/x.png", b"x", "image/png", {}),
        lambda: storage.get("link/secret.png"),
        lambda: storage.get("file-link.png"),
        lambda: storage.exists("link/secret.png"),
        lambda: storage.copy("file-link.png", "copy.png"),
    ):
        with pytest.raises(UnsafeKey):
            call()
    assert not (outside / "x.png").exists()


def test_symlinked_root_is_fine(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "real")
    storage = FileStorage(tmp_path / "alias")
    storage.put("a/b.png", b"x", "image/png", {})
    assert storage.get("a/b.png") == b"x"
    assert storage.url("a/b.png") == (tmp_path / "alias" / "a" / "b.png").as_uri()


def test_permission_error_is_permanent(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root ignores file permissions")
    (tmp_path / "ro").mkdir()
    storage = FileStorage(tmp_path / "ro")
    os.chmod(tmp_path / "ro", 0o500)
    try:
        with pytest.raises(StorageError) as info:
            storage.put("a.png", b"x", "image/png", {})
        assert not info.value.retryable
    finally:
        os.chmod(tmp_path / "ro", 0o700)


def test_copy_twice_onto_the_same_link_leaves_no_temporary_files(tmp_path: Path) -> None:
    """rename() between two links of one file is a no-op; a second copy must not leave its temp name."""
    s = FileStorage(tmp_path)
    s.put("src/a.png", b"\x89PNG data", "image/png", {})
    s.copy("src/a.png", "out/a.png")
    s.copy("src/a.png", "out/a.png")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png"]
    assert s.get("out/a.png") == b"\x89PNG data"
