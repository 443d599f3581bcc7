"""What waits in this machine's spools: a read-only view for `status`, `run` and the reports.

A paid image the store refused for a while (an outage, a full disk) is kept in a spool (storage.spool) and
uploaded later; until then it is paid for but not stored. This module reads every spool under a root (all
processes of this host, live or dead) without taking any lock or changing anything, so a reporting command
can tell "stored" from "paid and spooled". Spools of other hosts are not visible from here.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pipeline.storage.spool import SpooledObject

log = logging.getLogger(__name__)

#: most spool manifests read by one scan (a spool that big has bigger problems; the count says "at least")
MAX_SCANNED = 100_000


@dataclass(frozen=True)
class SpoolScan:
    """The spooled objects found under a spool root."""

    objects: tuple[SpooledObject, ...]
    #: total bytes waiting
    size: int
    #: True when MAX_SCANNED stopped the scan
    truncated: bool = False

    def keys(self) -> set[str]:
        return {o.key for o in self.objects}


def scan_spools(root: Path) -> SpoolScan:
    """Every committed spool entry under `root` (one directory per process); unreadable manifests are skipped."""
    objects: list[SpooledObject] = []
    truncated = False
    if not root.is_dir():
        return SpoolScan((), 0)
    for path in _manifests(root):
        if len(objects) >= MAX_SCANNED:
            truncated = True
            break
        try:
            raw = json.loads(path.read_text())
            raw.pop("version", None)
            entry = SpooledObject(**raw)
        except (OSError, ValueError, TypeError) as e:
            log.debug("spool manifest %s unreadable: %s", path, e)
            continue
        if (path.parent / f"{entry.entry_id}.data").is_file():
            objects.append(entry)
    return SpoolScan(tuple(objects), sum(o.size for o in objects), truncated)


def _manifests(root: Path) -> Iterable[Path]:
    try:
        dirs = sorted(d for d in root.iterdir() if d.is_dir())
    except OSError:
        return []
    out: list[Path] = []
    for d in dirs:
        try:
            out.extend(sorted(d.glob("*.json")))
        except OSError:
            continue
    return out
