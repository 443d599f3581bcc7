"""Coverage-guided fuzzing of the manifest loader with atheris (libFuzzer). Run by test_atheris.py as a child
process: `python tests/security/atheris_manifest.py -runs=N -timeout=S -rss_limit_mb=M CORPUS_DIR`.

Each input is written as a manifest (beside a copy of the good corpus' data/ and refs/, so items_from and
references resolve) and loaded; InputError is the expected outcome for bad input, anything else escapes and libFuzzer
reports a crash (non-zero exit, the input saved as crash-*)."""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from pipeline.errors import InputError
    from pipeline.manifest import load_manifest

GOOD = Path(__file__).resolve().parents[1] / "data" / "manifests" / "good"
#: a copy of the good corpus' directory (its data/ and refs/); inputs are written there as m.yaml
WORK = Path(tempfile.mkdtemp(prefix="atheris-manifest-"))
shutil.copytree(GOOD, WORK / "good")
TARGET = WORK / "good" / "m.yaml"


def one_input(data: bytes) -> None:
    TARGET.write_bytes(data)
    with contextlib.suppress(InputError):
        load_manifest(TARGET)


def main() -> None:
    try:
        atheris.Setup(sys.argv, one_input)
        atheris.Fuzz()
    finally:
        shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    main()
