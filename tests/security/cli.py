"""Running `pipeline` as a user would, in a subprocess with its own working directory, and looking at what it
left behind."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

PIPELINE = str(Path(sys.executable).parent / "pipeline")
#: wide terminal, so Rich does not wrap the lines the tests look for
WIDE = {"COLUMNS": "400", "TERM": "dumb", "NO_COLOR": "1"}


@dataclass(frozen=True)
class Ran:
    rc: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err


def run_cli(cwd: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 90) -> Ran:
    full = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_") and not k.endswith("_API_KEY")}
    full.update(WIDE)
    full.update(env or {})
    res = subprocess.run([PIPELINE, *args], cwd=cwd, env=full, capture_output=True, text=True, timeout=timeout)
    return Ran(res.returncode, res.stdout, res.stderr)


def tree(root: Path) -> set[str]:
    """Every path under `root`, relative (what a command may have created)."""
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def assert_clean_refusal(ran: Ran, *parts: str) -> None:
    """Exit 2, a message naming the place, no traceback."""
    assert ran.rc == 2, ran.text
    assert "Traceback" not in ran.text and "MarkupError" not in ran.text, ran.text
    flat = " ".join(ran.text.split())
    for part in parts:
        assert part in flat, (part, ran.text)
