"""SpoolingStorage over S3Storage on a real moto server that is stopped and restarted."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.errors import StorageError
from pipeline.storage.local import FileStorage
from pipeline.storage.s3 import S3ClientOptions, S3Storage, make_s3_client
from pipeline.storage.spool import SpoolingStorage
from tests.fixtures.s3 import MotoServer

FAST = S3ClientOptions(connect_timeout_s=1.0, read_timeout_s=5.0, max_attempts=1)


@dataclass
class Rig:
    server: MotoServer
    s3: S3Storage
    spool: SpoolingStorage
    spool_dir: Path

    def outage(self) -> None:
        self.server.stop()

    def recover(self) -> None:
        self.server.start()  # moto forgets everything on restart
        self.s3.check(create_bucket=True)


@pytest.fixture
def rig(moto_server_factory: Callable[[], MotoServer], tmp_path: Path) -> Iterator[Rig]:
    server = moto_server_factory()
    env = {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_S3": server.endpoint_url,
    }
    s3 = S3Storage("spool-test", "p", make_s3_client(env=env, options=FAST), create_bucket=True)
    s3.check()
    spool_dir = tmp_path / "spool"
    yield Rig(server, s3, SpoolingStorage(s3, spool_dir), spool_dir)


def test_healthy_put_goes_straight_through(rig: Rig) -> None:
    url = rig.spool.put("a.png", b"x", "image/png", {"job": "j"})
    assert url == "s3://spool-test/p/a.png"
    assert rig.spool.pending() == 0
    assert rig.s3.get("a.png") == b"x"
    assert not rig.spool_dir.exists()


def test_outage_spools_then_flush_uploads(rig: Rig) -> None:
    rig.outage()
    url = rig.spool.put("jobs/j/a.png", b"image-a", "image/png", {"job": "j", "item": "a"})
    assert url == rig.s3.url("jobs/j/a.png")  # as if stored
    rig.spool.put("jobs/j/b.png", b"image-b", "image/webp", {"item": "b"})
    assert rig.spool.pending() == 2
    assert rig.spool.get("jobs/j/a.png") == b"image-a"  # read your writes while down
    assert rig.spool.exists("jobs/j/b.png")
    assert len(list(rig.spool_dir.glob("*.data"))) == len(list(rig.spool_dir.glob("*.json"))) == 2

    assert rig.spool.flush() == 0  # still down: nothing lost, nothing uploaded
    assert rig.spool.pending() == 2

    rig.recover()
    assert rig.spool.flush() == 2
    assert rig.spool.pending() == 0
    assert list(rig.spool_dir.iterdir()) == []
    assert rig.s3.get("jobs/j/a.png") == b"image-a"
    head = rig.s3.client.head_object(Bucket="spool-test", Key="p/jobs/j/b.png")
    assert head["ContentType"] == "image/webp"
    assert head["Metadata"] == {"item": "b"}


def test_copy_of_a_spooled_key_copies_from_the_spool(rig: Rig) -> None:
    rig.outage()
    rig.spool.put("cache/k.png", b"cached", "image/png", {"cache-key": "k"})
    assert rig.spool.copy("cache/k.png", "jobs/j/i.png") == rig.s3.url("jobs/j/i.png")
    assert rig.spool.pending() == 2
    assert rig.spool.get("jobs/j/i.png") == b"cached"
    rig.recover()
    assert rig.spool.flush() == 2
    assert rig.s3.get("jobs/j/i.png") == b"cached"
    head = rig.s3.client.head_object(Bucket="spool-test", Key="p/jobs/j/i.png")
    assert head["Metadata"] == {"cache-key": "k"}


def test_copy_of_a_stored_key_while_down_fails_retryably(rig: Rig) -> None:
    rig.spool.put("cache/k.png", b"cached", "image/png", {})
    rig.outage()
    with pytest.raises(StorageError) as info:
        rig.spool.copy("cache/k.png", "jobs/j/i.png")
    assert info.value.retryable


def test_spool_survives_a_restart_of_the_process(rig: Rig) -> None:
    rig.outage()
    rig.spool.put("a.png", b"one", "image/png", {"job": "j"})
    rig.spool.put("b.png", b"two", "image/png", {})
    (rig.spool_dir / "99999999999999999999-1-00000001.data").write_bytes(b"interrupted, no manifest")
    rig.recover()
    reborn = SpoolingStorage(rig.s3, rig.spool_dir)  # a new process over the same directory
    assert reborn.pending() == 2
    assert reborn.flush() == 2
    assert rig.s3.get("a.png") == b"one" and rig.s3.get("b.png") == b"two"
    manifest_count = len(list(rig.spool_dir.glob("*.json")))
    assert manifest_count == 0


def test_manifest_holds_what_put_was_given(rig: Rig) -> None:
    rig.outage()
    rig.spool.put("a.png", b"one", "image/png", {"job": "j", "provider": "google"})
    (manifest_path,) = rig.spool_dir.glob("*.json")
    manifest = json.loads(manifest_path.read_text())
    assert manifest["key"] == "a.png"
    assert manifest["content_type"] == "image/png"
    assert manifest["metadata"] == {"job": "j", "provider": "google"}
    assert manifest["size"] == 3
    assert manifest_path.with_suffix(".data").read_bytes() == b"one"


def test_later_direct_put_wins_over_spooled_copy(rig: Rig) -> None:
    rig.outage()
    rig.spool.put("a.png", b"old", "image/png", {})
    rig.recover()
    rig.spool.put("a.png", b"new", "image/png", {})
    assert rig.spool.pending() == 0
    assert rig.spool.flush() == 0
    assert rig.s3.get("a.png") == b"new"


def test_oldest_first_and_superseded_entries_skipped(rig: Rig) -> None:
    rig.outage()
    rig.spool.put("a.png", b"v1", "image/png", {})
    rig.spool.put("a.png", b"v2", "image/png", {})
    assert rig.spool.get("a.png") == b"v2"
    rig.recover()
    assert rig.spool.flush() == 1
    assert rig.spool.pending() == 0
    assert rig.s3.get("a.png") == b"v2"


def test_non_retryable_errors_are_not_spooled(rig: Rig, tmp_path: Path) -> None:
    missing = S3Storage("no-such-bucket", "", rig.s3.client)
    spool = SpoolingStorage(missing, tmp_path / "other-spool")
    with pytest.raises(StorageError) as info:
        spool.put("a.png", b"x", "image/png", {})
    assert not info.value.retryable
    assert spool.pending() == 0


def test_flush_raises_non_retryable_and_keeps_objects(rig: Rig) -> None:
    rig.outage()
    rig.spool.put("a.png", b"x", "image/png", {})
    rig.server.start()  # back, but the bucket is gone (moto lost it)
    with pytest.raises(StorageError) as info:
        rig.spool.flush()
    assert not info.value.retryable
    assert rig.spool.pending() == 1
    rig.s3.check(create_bucket=True)
    assert rig.spool.flush() == 1


def test_corrupt_spooled_object_is_set_aside(rig: Rig) -> None:
    rig.outage()
    rig.spool.put("bad.png", b"original", "image/png", {})
    rig.spool.put("good.png", b"fine", "image/png", {})
    (data_path,) = [p for p in rig.spool_dir.glob("*.data") if p.read_bytes() == b"original"]
    data_path.write_bytes(b"bitrot!!")
    rig.recover()
    assert rig.spool.flush() == 1
    assert rig.spool.pending() == 0
    assert len(list(rig.spool_dir.glob("*.json.bad"))) == 1
    assert rig.s3.get("good.png") == b"fine"


def test_concurrent_puts_during_an_outage(rig: Rig) -> None:
    rig.outage()
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(5):
                rig.spool.put(f"t{n}/{i}.png", f"{n}-{i}".encode(), "image/png", {"item": f"{n}-{i}"})
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert rig.spool.pending() == 40
    rig.recover()
    flushers = [threading.Thread(target=rig.spool.flush) for _ in range(3)]
    for t in flushers:
        t.start()
    for t in flushers:
        t.join()
    assert rig.spool.pending() == 0
    for n in range(8):
        for i in range(5):
            assert rig.s3.get(f"t{n}/{i}.png") == f"{n}-{i}".encode()


def test_spool_over_file_storage_passes_through(tmp_path: Path) -> None:
    spool = SpoolingStorage(FileStorage(tmp_path / "out"), tmp_path / "spool")
    spool.check()
    assert spool.put("a.png", b"x", "image/png", {}) == (tmp_path / "out" / "a.png").as_uri()
    assert spool.copy("a.png", "b.png") == spool.url("b.png")
    assert spool.get("b.png") == b"x" and spool.exists("b.png")
    assert spool.pending() == 0 and spool.flush() == 0
