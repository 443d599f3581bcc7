"""Files a report is written to (`--csv`, `--html`): checked before any work, written with a clean refusal."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from pipeline.errors import InputError

T = TypeVar("T")


def check_writable(path: Path, opt: str) -> None:
    """InputError (naming the option and path) when `path` cannot be written: its directory is missing or not
    writable, or it is a directory itself."""
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"directory {str(parent)!r} does not exist", where=f"{opt} {path}")
    if path.is_dir():
        raise InputError("is a directory", where=f"{opt} {path}")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise InputError("not writable", where=f"{opt} {path}")


def write_refusing(fn: Callable[[], T], path: Path, opt: str) -> T:
    """Run the writer `fn`; an OSError (disk full, permissions changed meanwhile) becomes an InputError."""
    try:
        return fn()
    except OSError as e:
        raise InputError(f"cannot write: {e.strerror or type(e).__name__}", where=f"{opt} {path}") from None
