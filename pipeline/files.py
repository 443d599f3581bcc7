"""Reading a user-named file safely: regular files only, never more than a cap (the one helper every reader of
manifests, item files, references, config and sandbox profiles uses)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from pipeline.errors import InputError

__all__ = ["read_capped"]


def read_capped(path: Path, max_bytes: int, *, what: str, where: str | None = None) -> bytes:
    """Read a regular file of at most `max_bytes` (FIFOs, devices, directories refused, never blocked on)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise InputError(f"{what}: file not found", where=where) from None
    except (OSError, ValueError) as e:
        raise InputError(f"{what}: cannot open ({getattr(e, 'strerror', None) or e})", where=where) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"{what}: not a regular file", where=where)
        if st.st_size > max_bytes:
            raise InputError(f"{what}: file is {st.st_size} bytes, more than {max_bytes}", where=where)
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(max_bytes + 1)
    except OSError as e:
        raise InputError(f"{what}: cannot read ({e.strerror or e})", where=where) from None
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise InputError(f"{what}: file is larger than {max_bytes} bytes", where=where)
    return data
