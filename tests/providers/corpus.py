"""The capture corpus (tests/providers/captures/*/*.yaml): providers' published request and response
examples, loaded for the adapter and sandbox tests. See captures/README.md for the format."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

CAPTURES = Path(__file__).parent / "captures"
#: placeholders a capture may hold where the docs show image data; tests substitute real values
IMAGE_B64 = "{{IMAGE_B64}}"
IMAGE_URL = "{{IMAGE_URL}}"
REQUIRED = ("source", "read", "provider", "kind")


@dataclass(frozen=True)
class Capture:
    path: Path
    source: str
    read: str
    provider: str
    kind: str
    method: str | None = None
    route: str | None = None
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    body_text: str | None = None
    expect: dict[str, Any] = field(default_factory=dict)
    notes: str = ""

    @property
    def id(self) -> str:
        return f"{self.provider}/{self.path.stem}"

    def body_with(self, **values: str) -> Any:
        """The body with placeholders replaced: body_with(IMAGE_B64="...", IMAGE_URL="...")."""
        return _substitute(self.body, {"{{" + k + "}}": v for k, v in values.items()})


def _substitute(obj: Any, values: dict[str, str]) -> Any:
    if isinstance(obj, str):
        for k, v in values.items():
            obj = obj.replace(k, v)
        return obj
    if isinstance(obj, list):
        return [_substitute(v, values) for v in obj]
    if isinstance(obj, dict):
        return {k: _substitute(v, values) for k, v in obj.items()}
    return obj


def load(path: Path) -> Capture:
    text = path.read_text(encoding="utf-8")
    if not text.startswith("#"):
        raise ValueError(f"{path}: a capture starts with a comment header naming its source")
    data = yaml.safe_load(text)
    missing = [k for k in REQUIRED if not data.get(k)]
    if missing:
        raise ValueError(f"{path}: missing {', '.join(missing)}")
    if data["kind"] not in ("request", "response", "callback"):
        raise ValueError(f"{path}: kind must be request, response or callback")
    if data["provider"] != path.parent.name:
        raise ValueError(f"{path}: provider {data['provider']!r} is not its folder's")
    return Capture(
        path=path, source=str(data["source"]), read=str(data["read"]), provider=data["provider"],
        kind=data["kind"], method=data.get("method"), route=data.get("path"), status=data.get("status"),
        headers=dict(data.get("headers") or {}), body=data.get("body"), body_text=data.get("body_text"),
        expect=dict(data.get("expect") or {}), notes=str(data.get("notes") or ""),
    )


def captures(provider: str | None = None, kind: str | None = None) -> list[Capture]:
    """Every capture, optionally of one provider folder and one kind, in a stable order."""
    out = [load(p) for p in sorted(CAPTURES.glob("*/*.yaml"))]
    return [c for c in out if (provider is None or c.provider == provider) and (kind is None or c.kind == kind)]


def shape(obj: Any) -> Any:
    """The documented shape of a JSON value: dicts keep their keys, lists the shape of their first element,
    scalars become their JSON type name. Two values have the same shape when the wire contract is the same."""
    if isinstance(obj, dict):
        return {k: shape(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [shape(obj[0])] if obj else []
    if obj is None:
        return "null"
    if isinstance(obj, bool):
        return "boolean"
    if isinstance(obj, int | float):
        return "number"
    return "string"


def shape_problems(actual: Any, documented: Any, where: str = "$", *, nullable: bool = True,
                   mixed_lists: bool = False) -> list[str]:
    """Where `actual` departs from the documented shape: a documented key missing, or a type that differs.
    Keys the docs don't show are allowed (providers add fields); a documented null matches any type. Every element
    of a list must have the shape of the documented first one; with `mixed_lists` (lists of different kinds of
    objects: Google's error `details`, a thought part before the image part) every documented element must have
    the shape of some element of the answer instead."""
    problems: list[str] = []
    if documented is None and nullable:
        return problems
    kw: dict[str, Any] = {"nullable": nullable, "mixed_lists": mixed_lists}
    if isinstance(documented, dict):
        if not isinstance(actual, dict):
            return [f"{where}: expected an object, got {shape(actual)!r}"]
        for k, v in documented.items():
            if k not in actual:
                problems.append(f"{where}.{k}: missing")
            else:
                problems += shape_problems(actual[k], v, f"{where}.{k}", **kw)
        return problems
    if isinstance(documented, list):
        if not isinstance(actual, list):
            return [f"{where}: expected an array, got {shape(actual)!r}"]
        if documented and actual and mixed_lists:
            for j, d in enumerate(documented):
                if all(shape_problems(a, d, f"{where}[?]", **kw) for a in actual):
                    problems.append(f"{where}: no element has the shape of the documented [{j}]")
        elif documented and actual:
            for i, a in enumerate(actual):
                problems += shape_problems(a, documented[0], f"{where}[{i}]", **kw)
        return problems
    if actual is not None and shape(actual) != shape(documented):
        problems.append(f"{where}: expected {shape(documented)}, got {shape(actual)}")
    return problems
