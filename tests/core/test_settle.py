"""Settlement when the object store goes away between storing a paid image and copying it to the item's
output (found by the s3_outage fault test under load: such items failed, their image paid for). S3 is a real
moto server over HTTP, stopped right after the image's put; the provider is the sandbox over HTTP."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import select

from pipeline.clock import utcnow
from pipeline.core.process import Outcome, process_item
from pipeline.core.submit import submit
from pipeline.db.models import Item, LedgerEntry
from pipeline.sandbox.server import SandboxServer
from pipeline.states import ItemState
from pipeline.storage.s3 import S3ClientOptions, S3Storage, make_s3_client
from pipeline.storage.spool import SpoolingStorage
from tests.core.helpers import job, runtime, settings_for, specs
from tests.fixtures.s3 import MotoServer

FAST = S3ClientOptions(connect_timeout_s=1.0, read_timeout_s=5.0, max_attempts=1)


class OutageAfterFirstPut:
    """The real S3 backend; the server stops right after the first object is stored (a network outage)."""

    def __init__(self, inner: S3Storage, server: MotoServer) -> None:
        self.inner, self.server, self.puts = inner, server, 0

    def put(self, key: str, data: bytes, content_type: str, metadata: dict[str, str]) -> str:
        url = self.inner.put(key, data, content_type, metadata)
        self.puts += 1
        if self.puts == 1:
            self.server.stop()
        return url

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


def test_a_store_lost_between_put_and_copy_spools_the_output(
        tmp_path: Path, sandbox: SandboxServer, moto_server_factory: Callable[[], MotoServer]) -> None:
    server = moto_server_factory()
    env = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL_S3": server.endpoint_url}
    s3 = S3Storage("settle-test", "p", make_s3_client(env=env, options=FAST), create_bucket=True)
    s3.check()
    spool = SpoolingStorage(OutageAfterFirstPut(s3, server), tmp_path / "spool")  # type: ignore[arg-type]
    rt = runtime(settings_for(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}", sandbox.url))
    try:
        ctx = dataclasses.replace(rt.ctx, storage=spool)
        res = submit(rt.sessions, job(), specs(1), utcnow())
        with rt.sessions() as s:
            item_id = s.scalar(select(Item.id).where(Item.job_id == res.job_id))
        assert item_id is not None
        assert process_item(ctx, item_id) == Outcome.SUCCEEDED
        with rt.sessions() as s:
            item = s.get(Item, item_id)
            assert item is not None and item.state == ItemState.SUCCEEDED and item.failure_reason is None
            assert len(list(s.scalars(select(LedgerEntry).where(LedgerEntry.item_id == item_id)))) == 1
        assert spool.pending() == 2  # the output and its thumbnail, waiting for the store
        server.start()  # moto forgets its buckets on restart
        s3.check(create_bucket=True)
        assert spool.flush() == 2 and spool.pending() == 0
        assert s3.get("test/item-000.png")[:8] == b"\x89PNG\r\n\x1a\n"
        assert sandbox.ledger()["billed_images"] == 1
    finally:
        rt.close()
