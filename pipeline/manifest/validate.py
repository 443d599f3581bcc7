"""validate_manifest: load and expand without the network; what `pipeline validate` and `estimate` use.

Local references are read, sniffed and hashed like at submission (so their cache keys are exact); s3:// and
https:// references are only checked for form: their sha256 is "" and the cache keys of their items are
provisional (`unresolved_references` counts them).
"""

from __future__ import annotations

import difflib
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from pipeline.errors import InputError
from pipeline.manifest.expand import EXTENSIONS, ItemSpec, expand_items
from pipeline.manifest.load import load_manifest
from pipeline.manifest.schema import RESERVED_FIELDS, Manifest
from pipeline.presets import MODEL
from pipeline.providers.base import Reference
from pipeline.references import resolve_reference


@dataclass(frozen=True)
class ManifestSummary:
    manifest: Manifest
    items: tuple[ItemSpec, ...]
    #: distinct s3/https references not fetched (their items' cache keys are provisional)
    unresolved_references: int
    #: things that are allowed but probably not meant (a field named like a reserved one, a key's extension)
    warnings: tuple[str, ...]

    @property
    def job(self) -> str:
        return self.manifest.job

    @property
    def item_count(self) -> int:
        return len(self.items)

    @property
    def by_resolution(self) -> dict[str, int]:
        return dict(Counter(spec.resolution for spec in self.items))

    @property
    def reference_count(self) -> int:
        """References over all items (what input-image pricing counts)."""
        return sum(len(spec.references) for spec in self.items)


def validate_manifest(path: Path, *, extra_vars: Mapping[str, object] | None = None, model: str = MODEL,
                      allow_http: bool = False) -> ManifestSummary:
    """Load and expand `path` with no network access. Raises InputError on any problem."""
    manifest = load_manifest(path, extra_vars=extra_vars)
    remote: set[str] = set()

    def fetch(source: str, base_dir: Path) -> Reference:
        if "://" not in source:
            return resolve_reference(source, base_dir)
        _check_remote_form(source, allow_http=allow_http)
        remote.add(source)
        return Reference(data=b"", mime_type="", sha256="")

    specs = expand_items(manifest, fetch_reference=fetch, model=model)
    return ManifestSummary(manifest=manifest, items=tuple(specs), unresolved_references=len(remote),
                           warnings=tuple(_warnings(manifest, specs)))


def _check_remote_form(source: str, *, allow_http: bool) -> None:
    if source.startswith("s3://"):
        bucket, _, key = source[5:].partition("/")
        if not bucket or not key:
            raise InputError(f"reference {source!r}: an s3 reference is s3://bucket/key")
        return
    try:
        url = httpx.URL(source)
    except (httpx.InvalidURL, ValueError, TypeError) as e:
        raise InputError(f"reference {source!r}: invalid URL ({e})") from None
    allowed = ("https", "http") if allow_http else ("https",)
    if url.scheme not in allowed:
        raise InputError(f"reference {source!r}: scheme {url.scheme!r} not allowed (use a path, s3:// or https://)")
    if not url.host:
        raise InputError(f"reference {source!r}: URL has no host")
    if url.userinfo:
        raise InputError(f"reference {source!r}: credentials in reference URLs are not allowed")


def _warnings(manifest: Manifest, specs: list[ItemSpec]) -> list[str]:
    out: list[str] = []
    names = {name: item for item in reversed(manifest.items) for name in item.vars}
    for name, item in sorted(names.items()):
        close = difflib.get_close_matches(name, RESERVED_FIELDS, n=1, cutoff=0.8)
        if close:
            out.append(f"{item.place}: field {name!r} is a template variable, not {close[0]!r}; a typo?")
    for spec in specs:
        ext = spec.output_key.rsplit(".", 1)[-1].lower() if "." in spec.output_key.rsplit("/", 1)[-1] else ""
        if ext and ext in {"png", "jpg", "jpeg", "webp"} and EXTENSIONS[spec.output_format] != ext and not (
            spec.output_format == "jpeg" and ext == "jpeg"
        ):
            out.append(f"item {spec.key}: output key {spec.output_key!r} does not end in "
                       f".{EXTENSIONS[spec.output_format]} but the format is {spec.output_format}")
            if len(out) > 50:
                break
    return out
