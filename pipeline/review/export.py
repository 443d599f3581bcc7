"""Export the approved set of a job: a manifest of output keys and URLs (CSV or JSON) and a zip of the images.

The zip holds each image as `images/<output key>` (keys are sanitised relative paths: nothing can land outside
the archive's root when it is unpacked) plus `manifest.json` and `manifest.csv` at its root.
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import IO, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from pipeline.db.models import Item, ItemReview, Job
from pipeline.money import show
from pipeline.review.state import WITH_IMAGE, ReviewState
from pipeline.storage.base import Storage
from pipeline.storage.keys import sanitize_key

#: the columns of the CSV manifest, in order
CSV_COLUMNS = ("id", "output_key", "url", "prompt", "provider", "resolution", "aspect_ratio", "state", "cost_usd",
               "note")
#: folder of the images inside the zip
IMAGES_DIR = "images/"
#: rows fetched at a time for big jobs
BATCH_ROWS = 1000


@dataclass(frozen=True)
class ExportRow:
    id: str
    output_key: str
    url: str
    prompt: str
    provider: str
    resolution: str
    aspect_ratio: str
    state: str
    cost_usd: str
    note: str


def approved_rows(s: Session, job_id: int) -> Iterator[ExportRow]:
    """The job's approved items that have an image, in item order."""
    q = (select(Item.key, Item.output_key, Item.stored_url, Item.prompt, Item.provider, Item.resolution,
                Item.aspect_ratio, Item.state, Item.cost_usd, ItemReview.note)
         .join(ItemReview, ItemReview.item_id == Item.id)
         .where(Item.job_id == job_id, ItemReview.state == ReviewState.APPROVED,
                Item.state.in_([str(x) for x in WITH_IMAGE]))
         .order_by(Item.id)
         .execution_options(yield_per=BATCH_ROWS))
    for key, out_key, url, prompt, provider, res, ratio, state, cost, note in s.execute(q):
        yield ExportRow(id=key, output_key=out_key, url=url or "", prompt=prompt, provider=provider or "",
                        resolution=res, aspect_ratio=ratio, state=state, cost_usd=show(cost), note=note or "")


def write_csv(rows: list[ExportRow], out: IO[str]) -> None:
    w = csv.writer(out)
    w.writerow(CSV_COLUMNS)
    for r in rows:
        w.writerow([_cell(v) for v in (r.id, r.output_key, r.url, r.prompt, r.provider, r.resolution,
                                       r.aspect_ratio, r.state, r.cost_usd, r.note)])


def _cell(v: str) -> str:
    """A CSV cell a spreadsheet will not run as a formula (a prompt may start with '=')."""
    return "'" + v if v[:1] in ("=", "+", "-", "@", "\t", "\r") else v


def csv_text(rows: list[ExportRow]) -> str:
    buf = io.StringIO()
    write_csv(rows, buf)
    return buf.getvalue()


def manifest_json(job: Job, rows: list[ExportRow], now: datetime) -> dict[str, Any]:
    return {"job": job.name, "job_id": job.id, "exported_at": now.isoformat(timespec="seconds"),
            "review": "approved", "count": len(rows), "items": [asdict(r) for r in rows]}


def write_zip(storage: Storage, job: Job, rows: list[ExportRow], out: IO[bytes], now: datetime) -> int:
    """Write the zip of the approved images and their manifest to `out`; returns the images written."""
    n = 0
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for r in rows:
            name = IMAGES_DIR + sanitize_key(r.output_key)  # relative, no '..': safe to unpack anywhere
            zf.writestr(zipfile.ZipInfo(name, _zip_time(now)), storage.get(r.output_key))
            n += 1
        info = zipfile.ZipInfo("manifest.json", _zip_time(now))
        zf.writestr(info, json.dumps(manifest_json(job, rows, now), indent=2, ensure_ascii=False),
                    compress_type=zipfile.ZIP_DEFLATED)
        zf.writestr(zipfile.ZipInfo("manifest.csv", _zip_time(now)), csv_text(rows),
                    compress_type=zipfile.ZIP_DEFLATED)
    return n


def _zip_time(now: datetime) -> tuple[int, int, int, int, int, int]:
    return (max(1980, now.year), now.month, now.day, now.hour, now.minute, now.second)
