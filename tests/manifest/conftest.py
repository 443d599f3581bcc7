"""Helpers for manifest tests: write a small manifest (and its files) into a temporary directory."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

DATA = Path(__file__).resolve().parents[1] / "data" / "manifests"

HEADER = 'job: t\nproviders: [sandbox]\nprompt: "Photo of {{ title }}"\n'


def png_bytes(color: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (16, 16)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


WriteManifest = Callable[..., Path]


@pytest.fixture
def write_manifest(tmp_path: Path) -> WriteManifest:
    """write_manifest(text, name="m.yaml", files={"data/x.csv": "..."}) -> the manifest's path."""

    def write(text: str, name: str = "m.yaml", files: dict[str, str | bytes] | None = None) -> Path:
        for rel, content in (files or {}).items():
            target = tmp_path / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                target.write_bytes(content)
            else:
                target.write_text(content, encoding="utf-8")
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write
