"""atheris (coverage-guided, libFuzzer) over the manifest loader, seeded with the good and bad corpora: a few
thousand inputs, each bounded in time and memory by libFuzzer itself; only InputError may come out."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
DATA = HERE.parent / "data" / "manifests"
#: inputs tried; each must finish within TIMEOUT_S and the process stay under RSS_LIMIT_MB
RUNS = 3000
TIMEOUT_S = 10
RSS_LIMIT_MB = 1024


def test_atheris_manifest_loader(tmp_path: Path) -> None:
    pytest.importorskip("atheris", reason="atheris is not installed (no wheel for this platform)")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for src in sorted(DATA.glob("*/*.yaml")):
        shutil.copy(src, corpus / f"{src.parent.name}-{src.name}")
    res = subprocess.run(
        [sys.executable, str(HERE / "atheris_manifest.py"), f"-runs={RUNS}", f"-timeout={TIMEOUT_S}",
         f"-rss_limit_mb={RSS_LIMIT_MB}", "-max_len=8192", f"-artifact_prefix={tmp_path}/", str(corpus)],
        capture_output=True, text=True, timeout=600, cwd=HERE.parents[1])
    crashes = sorted(p.name for p in tmp_path.glob("crash-*")) + sorted(p.name for p in tmp_path.glob("timeout-*"))
    assert res.returncode == 0 and not crashes, res.stderr[-4000:]
    assert f"Done {RUNS} runs" in res.stderr, res.stderr[-2000:]
