"""The manifest's models (pydantic v2, unknown keys refused). See DESIGN.md "Manifest" and the README.

    ManifestFile   what a manifest file may say at the top level (items still raw)
    Manifest       the loaded, validated manifest: ManifestFile's settings + parsed Items + where it came from
    ItemFields     an item's reserved fields; Item adds its template variables and its place (file:line)
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    field_validator,
)

from pipeline.clock import utcnow
from pipeline.manifest.values import identifier_problem, nfc
from pipeline.money import storable_problem
from pipeline.providers.base import ASPECT_RATIOS, RESOLUTIONS

#: most items in one manifest (inline and items_from together)
MAX_ITEMS = 1_000_000
#: most references per item (the model's own limit)
MAX_REFERENCES = 14
#: longest template source (prompt or key template), in characters
MAX_TEMPLATE_CHARS = 64_000
#: longest item id (the items.key column)
MAX_ID_CHARS = 200
#: longest region name (the jobs.region column)
MAX_REGION_CHARS = 16
#: farthest deadline, from now
MAX_DEADLINE = timedelta(days=3650)
OUTPUT_FORMATS = ("png", "jpeg", "webp")
#: output key template when the manifest gives none
DEFAULT_OUTPUT_KEY = "{{ job }}/{{ id }}.{{ format }}"
#: item fields with a meaning of their own; every other item field is a template variable
RESERVED_FIELDS = ("id", "prompt", "references", "resolution", "aspect_ratio", "format", "output_key", "tags")
#: template variables the expansion sets itself; an item field may not use these names
BUILTIN_VARS = ("job", "index", "output_format")

_JOB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_DURATION = re.compile(
    r"^\s*(?:(\d+)\s*w)?\s*(?:(\d+)\s*d)?\s*(?:(\d+)\s*h)?\s*(?:(\d+)\s*m)?\s*(?:(\d+)\s*s)?\s*$"
)


def _resolution(v: object) -> object:
    if isinstance(v, str) and v not in RESOLUTIONS and v.upper() in RESOLUTIONS:
        raise ValueError(f"resolution is uppercase: {v.upper()!r}, not {v!r}")
    if v not in RESOLUTIONS:
        raise ValueError(f"resolution must be one of {', '.join(RESOLUTIONS)} (got {v!r})")
    return v


def _aspect_ratio(v: object) -> object:
    if v not in ASPECT_RATIOS:
        hint = " (quote it in YAML: \"16:9\")" if isinstance(v, int | float) else ""
        raise ValueError(f"aspect_ratio must be one of {', '.join(ASPECT_RATIOS)} (got {v!r}){hint}")
    return v


def _format(v: object) -> object:
    if v not in OUTPUT_FORMATS:
        hint = " (use 'jpeg')" if v == "jpg" else ""
        raise ValueError(f"format must be one of {', '.join(OUTPUT_FORMATS)} (got {v!r}){hint}")
    return v


def _item_id(v: object) -> object:
    if isinstance(v, int) and not isinstance(v, bool):
        v = str(v)
    if not isinstance(v, str):
        raise ValueError(f"id must be a string (got {type(v).__name__})")
    v = nfc(v)  # "é" typed two ways is one id (and one file name)
    if not v or v != v.strip():
        raise ValueError(f"id must be non-empty without surrounding spaces (got {v!r})")
    if len(v) > MAX_ID_CHARS or _CONTROL.search(v) or any(c in v for c in "/\\,") or v in (".", ".."):
        raise ValueError(f"id {v[:40]!r} is not allowed: at most {MAX_ID_CHARS} characters, "
                         "no control characters, '/', '\\' or ','")
    problem = identifier_problem(v)
    if problem:
        raise ValueError(f"id {v[:40]!r}: {problem}")
    return v


def _tag(v: object) -> object:
    if not isinstance(v, str) or not v.strip() or len(v) > 100 or _CONTROL.search(v):
        raise ValueError(f"a tag is a non-empty string of at most 100 characters (got {v!r})")
    v = nfc(v.strip())
    problem = identifier_problem(v)
    if problem:
        raise ValueError(f"tag {v[:40]!r}: {problem}")
    return v


def _one_or_many(v: object) -> object:
    return [v] if isinstance(v, str) else v


def _references(v: tuple[str, ...]) -> tuple[str, ...]:
    if len(v) > MAX_REFERENCES:
        raise ValueError(f"at most {MAX_REFERENCES} references per item (got {len(v)})")
    return v


def _reference(v: object) -> object:
    if not isinstance(v, str) or not v.strip() or len(v) > 4096 or _CONTROL.search(v):
        raise ValueError(f"a reference is a path, s3:// or https:// URL (got {v!r:.80})")
    return v.strip()


def _money(v: object) -> object:
    if isinstance(v, bool):
        raise ValueError("an amount is a number")
    if isinstance(v, float):
        return repr(v)  # the decimal the user wrote, never the binary expansion
    return v


def _storable(v: Decimal) -> Decimal:
    """The same amount on Postgres and SQLite: finite, within Numeric(14, 6), at most 6 decimal places."""
    problem = storable_problem(v)
    if problem:
        raise ValueError(problem)
    return v


def _template(v: object) -> object:
    if not isinstance(v, str) or not v.strip():
        raise ValueError("a template must be a non-empty string")
    if len(v) > MAX_TEMPLATE_CHARS:
        raise ValueError(f"template longer than {MAX_TEMPLATE_CHARS} characters")
    return v


Resolution = Annotated[str, AfterValidator(_resolution)]
AspectRatio = Annotated[str, AfterValidator(_aspect_ratio)]
OutputFormat = Annotated[str, AfterValidator(_format)]
ItemId = Annotated[str, BeforeValidator(_item_id)]
Tag = Annotated[str, BeforeValidator(_tag)]
Tags = Annotated[tuple[Tag, ...], BeforeValidator(_one_or_many)]
ReferenceSource = Annotated[str, BeforeValidator(_reference)]
References = Annotated[
    tuple[ReferenceSource, ...], BeforeValidator(_one_or_many), AfterValidator(_references)
]
Template = Annotated[str, BeforeValidator(_template)]
Money = Annotated[Decimal, BeforeValidator(_money), AfterValidator(_storable)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Defaults(_Strict):
    resolution: Resolution = "1K"
    aspect_ratio: AspectRatio = "1:1"
    format: OutputFormat = "png"


class Budget(_Strict):
    max_usd: Money = Field(ge=0)


class Output(_Strict):
    #: Jinja2 template of the storage key
    key: Template = DEFAULT_OUTPUT_KEY
    #: other jobs may write the same keys (the last image stored wins); by default submit refuses a key that
    #: another job's item also writes
    shared: StrictBool = False


class Schedule(_Strict):
    cron: str
    timezone: str = "UTC"

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, v: str) -> str:
        if not croniter.is_valid(v):
            raise ValueError(f"not a valid cron expression: {v!r}")
        return v

    @field_validator("timezone")
    @classmethod
    def _valid_timezone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            raise ValueError(f"unknown time zone {v!r} (an IANA name like Europe/Berlin)") from None
        return v


def parse_deadline(v: object) -> datetime | timedelta | None:
    """A deadline: an ISO datetime (naive = UTC; kept as naive UTC) or a duration like '24h', '1d12h'."""
    if v is None or isinstance(v, timedelta):
        return v
    if isinstance(v, datetime):
        try:
            return v.astimezone(UTC).replace(tzinfo=None) if v.tzinfo else v
        except (OverflowError, ValueError):
            raise ValueError(f"deadline {v} is out of range") from None
    if isinstance(v, date):
        return datetime.combine(v, time())
    if not isinstance(v, str) or not v.strip():
        raise ValueError("deadline is an ISO datetime or a duration like '24h'")
    m = _DURATION.match(v)
    if m and any(m.groups()):
        if any(len(g) > 9 for g in m.groups() if g):
            raise ValueError(f"deadline {v!r} is too far away")
        w, d, h, mi, s = (int(g or 0) for g in m.groups())
        try:
            span = timedelta(weeks=w, days=d, hours=h, minutes=mi, seconds=s)
        except OverflowError:
            raise ValueError(f"deadline {v!r} is too far away") from None
        if span > MAX_DEADLINE:
            raise ValueError(f"deadline {v!r} is too far away (at most {MAX_DEADLINE.days} days)")
        if span <= timedelta(0):
            raise ValueError(f"deadline {v!r} must be in the future")
        return span
    try:
        parsed = datetime.fromisoformat(v.strip())
    except ValueError:
        raise ValueError(f"deadline {v!r} is neither an ISO datetime nor a duration like '24h'") from None
    try:
        return parsed.astimezone(UTC).replace(tzinfo=None) if parsed.tzinfo else parsed
    except (OverflowError, ValueError):
        raise ValueError(f"deadline {v!r} is out of range") from None


def _webhook(v: object) -> object:
    if v is not None and (not isinstance(v, str) or not v.startswith(("https://", "http://"))
                          or _CONTROL.search(v) or len(v) > 2048):
        raise ValueError("webhook_url is an http(s):// address")
    return v


class Notify(_Strict):
    """A job's own notifications; keys left out come from the config's `notify:`."""

    webhook_url: Annotated[str | None, BeforeValidator(_webhook)] = None
    #: an environment variable (of the workers) holding the webhook URL
    webhook_url_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
    on: tuple[Literal["finished", "failed", "budget"], ...] | None = None


class ManifestSettings(_Strict):
    """Everything at a manifest's top level except the items."""

    job: str
    providers: tuple[str, ...] = Field(min_length=1)
    mode: Literal["sync", "batch", "auto"] = "sync"
    defaults: Defaults = Defaults()
    budget: Budget | None = None
    output: Output | None = None
    prompt: Template | None = None
    items_from: str | None = None
    schedule: Schedule | None = None
    region: str | None = None
    #: naive UTC datetime, or a duration from submission
    deadline: Annotated[datetime | timedelta | None, BeforeValidator(parse_deadline)] = None
    #: providers whose per-image price is above this are skipped
    max_price: Money | None = Field(default=None, gt=0)
    failover: StrictBool = True
    data_policy: Literal["any", "official"] = "any"
    #: tags of items that give none
    tags: Tags = ()
    description: str | None = None
    #: webhook notifications for this job (finished, failed, budget)
    notify: Notify | None = None

    @field_validator("job")
    @classmethod
    def _job_name(cls, v: str) -> str:
        if not _JOB_NAME.match(v):
            raise ValueError(f"job name {v[:60]!r}: letters, digits, '.', '_' and '-', starting with a "
                             "letter or digit, at most 128 characters")
        return v

    @field_validator("providers")
    @classmethod
    def _providers(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for name in v:
            if not name.strip() or _CONTROL.search(name):
                raise ValueError(f"bad provider name {name!r}")
        dupes = sorted({n for n in v if v.count(n) > 1})
        if dupes:
            raise ValueError(f"provider listed twice: {', '.join(dupes)}")
        return v

    @field_validator("region")
    @classmethod
    def _region(cls, v: str | None) -> str | None:
        if v is not None and (not v.strip() or len(v) > MAX_REGION_CHARS or _CONTROL.search(v)):
            raise ValueError(f"region {v[:40]!r}: a region name of at most {MAX_REGION_CHARS} characters, as a "
                             "provider's `regions:` defines it")
        return v

    @field_validator("items_from")
    @classmethod
    def _items_from(cls, v: str | None) -> str | None:
        if v is not None and (not v.strip() or "\x00" in v):
            raise ValueError("items_from is a path relative to the manifest")
        return v

    def deadline_at(self, now: datetime | None = None) -> datetime | None:
        """The deadline as a naive UTC datetime; a duration counts from `now` (default: the current time)."""
        if self.deadline is None or isinstance(self.deadline, datetime):
            return self.deadline
        return (now or utcnow()) + self.deadline


class ManifestFile(ManifestSettings):
    """A manifest as written: items still raw (each is validated on its own, so errors name its line)."""

    items: list[Any] | None = None


class ItemFields(_Strict):
    """An item's reserved fields."""

    id: ItemId
    prompt: Template | None = None
    references: References = ()
    resolution: Resolution | None = None
    aspect_ratio: AspectRatio | None = None
    format: OutputFormat | None = None
    output_key: Template | None = None
    tags: Tags | None = None


class Item(ItemFields):
    """One item: reserved fields, template variables (every other field) and where it was written."""

    vars: dict[str, Any] = Field(default_factory=dict)
    #: "file:line" of the item
    where: str = ""

    @property
    def place(self) -> str:
        """'jobs/x.yaml:12 (item sku-002)': what errors about this item name."""
        return f"{self.where} (item {self.id})"


class Manifest(ManifestSettings):
    """A loaded manifest: settings, every item (inline first, then items_from) and its source."""

    items: tuple[Item, ...]
    #: the manifest file as given to load_manifest
    source: Path
    #: variables the caller adds to every template (run_date, run_at, schedule, ...)
    extra_vars: dict[str, Any] = Field(default_factory=dict)
    #: top-level key -> "file:line", for messages
    locations: dict[str, str] = Field(default_factory=dict)

    @property
    def base_dir(self) -> Path:
        """The directory references and items_from are relative to."""
        return self.source.parent

    def where(self, key: str) -> str:
        return self.locations.get(key, f"{self.source}:1")
