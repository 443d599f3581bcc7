"""Settings: the one reader of the environment and pipeline.yaml. Read once, frozen, passed down.

Order (later wins): built-in defaults (embedded mode) < pipeline.yaml (cwd, or --config, or PIPELINE_CONFIG)
< PIPELINE_<KEY> environment variables. Provider entries are merged key by key over the built-in presets.
"""

from __future__ import annotations

import copy
import importlib.util
import os
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from pipeline.brokers import broker_kind
from pipeline.dialect import ImagesDialect
from pipeline.errors import InputError
from pipeline.files import read_capped
from pipeline.money import storable_problem
from pipeline.presets import PRESETS

ProviderKind = Literal["gemini", "gemini-batch", "openai-images", "replicate", "sandbox", "kie"]
RESOLUTIONS = ("1K", "2K", "4K")

#: the default config file name, looked up in the working directory
CONFIG_FILE = "pipeline.yaml"
#: largest config file we read
MAX_CONFIG_BYTES = 1_000_000
#: database backends the models and migrations are made for, and the Python module each driver needs
DATABASE_DRIVERS = {
    ("sqlite", "pysqlite"): "sqlite3",
    ("postgresql", "psycopg"): "psycopg",
    ("postgresql", "psycopg2"): "psycopg2",
}


def _storable(v: Decimal | None) -> Decimal | None:
    if v is not None:
        problem = storable_problem(v)
        if problem:
            raise ValueError(problem)
    return v


def database_url_problem(url: str) -> str | None:
    """Why `url` cannot be the pipeline's database (no I/O: parsed, and the driver module looked up), or None."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
        backend, driver = parsed.get_backend_name(), parsed.get_driver_name()
    except (ArgumentError, ValueError, TypeError):
        return "not a database URL (sqlite:///path/to/file.db or postgresql+psycopg://host/db)"
    module = DATABASE_DRIVERS.get((backend, driver))
    if module is None:
        return (f"unsupported database {parsed.drivername!r}: use sqlite:///path/to/file.db or "
                "postgresql+psycopg://host/db")
    if importlib.util.find_spec(module) is None:
        return f"the driver for {parsed.drivername!r} is not installed (module {module!r})"
    if backend == "sqlite":
        database = parsed.database or ""
        if database in ("", ":memory:") or parsed.query.get("mode") == "memory" or database.startswith(
                "file::memory:"):
            return ("an in-memory SQLite database lives in one connection and dies with it: give a file, "
                    "e.g. sqlite:///.pipeline/pipeline.db")
    return None

#: shortest serve token accepted (a guessable token on a public address is no protection)
MIN_TOKEN_CHARS = 16
#: the environment variable that sets serve.token (wins over the config file)
SERVE_TOKEN_ENV = "PIPELINE_SERVE_TOKEN"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Limits(_Strict):
    rpm: int = Field(default=60, gt=0)
    rpd: int = Field(default=100_000, gt=0)
    concurrency: int = Field(default=8, gt=0)
    #: count the rate over windows of this many seconds: at most rpm x window_s / 60 requests in any such window,
    #: admitted at once when they come at once (Kie.ai: 20 new tasks per 10 s = rpm 120, window_s 10). Without
    #: it, requests are spaced evenly at rpm.
    window_s: float | None = Field(default=None, gt=0, le=86_400)


class ProviderConfig(_Strict):
    name: str
    kind: ProviderKind
    base_url: str | None = None
    api_key_env: str | None = None
    #: "header" sends the provider's native key header (x-goog-api-key for gemini); "bearer" Authorization
    auth: Literal["header", "bearer"] = "header"
    model: str = "gemini-3-pro-image-preview"
    limits: Limits = Limits()
    #: fraction below the configured limits the admission gate keeps free
    headroom: Decimal = Decimal("0.03")
    #: per-image prices by resolution plus optional "input_image" and "blocked"; strings parse to exact Decimal
    prices: dict[str, Decimal] = Field(default_factory=dict)
    prices_date: str | None = None
    regions: dict[str, str] = Field(default_factory=dict)
    data_policy: Literal["official", "third-party"] = "third-party"
    timeout_s: float = Field(default=180.0, gt=0)
    #: hour (UTC) at which the provider's daily quota resets; Google resets at midnight Pacific (8 UTC)
    day_reset_hour_utc: int = Field(default=8, ge=0, le=23)
    enabled: bool = True
    #: price a call from the provider's usageMetadata (Google's token rates) rather than from `prices`;
    #: True only where the provider bills Google's tokens (google, google-batch, sandbox), never for resellers
    cost_from_usage: bool = False
    #: openai-images only: ask for "b64_json" (default) or "url" answers
    response_format: Literal["b64_json", "url"] = "b64_json"
    #: kie only: base URL of Kie's file upload API, used for references when storage has no presigned URLs
    #: (file storage); None = references need S3 storage (validate says so)
    upload_base_url: str | None = None
    #: kie and aimlapi: lifetime of the presigned URL a reference is passed by (S3 storage)
    reference_url_ttl_s: int = Field(default=3600, ge=60, le=7 * 24 * 3600)
    #: openai-images only: the preset's documented dialect (field names, edit model, reference field)
    images: ImagesDialect = ImagesDialect()
    #: gemini only: "flex" asks for Google's Flex tier (`serviceTier: flex`, half price, sheddable)
    service_tier: Literal["standard", "flex"] = "standard"

    @field_validator("prices", mode="before")
    @classmethod
    def _exact_prices(cls, v: Any) -> Any:
        if isinstance(v, dict):
            out = {}
            for k, p in v.items():
                if isinstance(p, float):
                    p = repr(p)  # "0.134", never the binary float expansion
                out[k] = p
            return out
        return v

    @field_validator("prices")
    @classmethod
    def _storable_prices(cls, v: dict[str, Decimal]) -> dict[str, Decimal]:
        for price in v.values():
            _storable(price)
        return v

    def price_for(self, resolution: str) -> Decimal | None:
        """Per-image price at this resolution, or None when unpriced (unknown, never free)."""
        return self.prices.get(resolution)

    def url_for_region(self, region: str | None) -> str | None:
        if region and region in self.regions:
            return self.regions[region]
        return self.base_url


class BudgetCaps(_Strict):
    daily_usd: Decimal | None = Field(default=None, ge=0)
    monthly_usd: Decimal | None = Field(default=None, ge=0)
    #: optional webhook for 50/80/100% alerts
    alert_webhook_url: str | None = None
    #: IANA time zone the budget's days and months are counted in (a call is charged to the day it started)
    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r} (an IANA name such as UTC or Europe/Berlin)") from None
        return v

    @field_validator("daily_usd", "monthly_usd")
    @classmethod
    def _storable_caps(cls, v: Decimal | None) -> Decimal | None:
        return _storable(v)


class WorkerSettings(_Strict):
    #: worker threads per process; provider calls are I/O bound and take 5-30 s each
    concurrency: int = Field(default=32, gt=0)
    #: an item's lease; renewed every lease_s/3 while its call is in progress
    lease_s: float = Field(default=30.0, gt=0)
    #: maximum provider calls per item before it fails
    max_attempts: int = Field(default=6, gt=0)
    backoff_base_s: float = Field(default=2.0, gt=0)
    backoff_cap_s: float = Field(default=300.0, gt=0)
    #: how often the dispatcher looks for due items
    dispatch_interval_s: float = Field(default=0.2, gt=0)
    #: items published but not yet claimed, at most, across all workers (the dispatch window)
    max_queued: int = Field(default=256, gt=0)
    #: a queued item not claimed within this is returned to pending (lost broker message)
    queued_timeout_s: float = Field(default=60.0, gt=0)
    #: database connections per process (and as many again in overflow); transactions are short, so a few
    #: serve many threads, and Postgres' max_connections (100 by default) is shared by every worker
    db_pool_size: int = Field(default=5, gt=0)


class BatchSettings(_Strict):
    """The provider batch tier (Gemini batch mode, half price, asynchronous)."""

    #: how often an open batch is polled (the guide: every 30-60 s)
    poll_s: float = Field(default=30.0, gt=0)
    #: most items in one batch
    max_items: int = Field(default=500, gt=0)
    #: `mode: auto` uses the batch tier when the deadline is at least this far away (the target turnaround)
    turnaround_h: float = Field(default=24.0, gt=0)
    #: an unclear create not found among the provider's batches after this long is given up (items retried)
    create_grace_s: float = Field(default=300.0, gt=0)


class FlexSettings(_Strict):
    """Google's Flex tier (providers with `service_tier: flex`)."""

    #: `mode: auto` uses flex providers only while the job's deadline is at least this far away
    min_deadline_h: float = Field(default=1.0, ge=0)


#: job events a webhook can be told about
NotifyEvent = Literal["finished", "failed", "budget"]
NOTIFY_EVENTS: tuple[NotifyEvent, ...] = ("finished", "failed", "budget")


class NotifySettings(_Strict):
    """Job notifications (`notify:`): a Slack-compatible webhook told once per event of a job run."""

    #: the webhook; a Slack incoming-webhook URL carries its secret, so prefer webhook_url_env
    webhook_url: str | None = None
    #: name of an environment variable holding the webhook URL (read when the notification is sent)
    webhook_url_env: str | None = None
    #: finished: a run ended with no failed item; failed: it ended with some; budget: a cap blocked an item
    on: tuple[NotifyEvent, ...] = NOTIFY_EVENTS

    @model_validator(mode="before")
    @classmethod
    def _yaml_on(cls, data: Any) -> Any:
        # YAML 1.1 (yaml.safe_load) reads a bare `on:` key as the boolean True
        if isinstance(data, dict) and True in data:
            data = {**{k: v for k, v in data.items() if k is not True}, "on": data[True]}
        return data

    @field_validator("webhook_url")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("https://", "http://")):
            raise ValueError("webhook_url is an http(s):// address")
        return v


class ServeSettings(_Strict):
    """`pipeline serve`: the review web app."""

    #: required when the app binds to anything but loopback (PIPELINE_SERVE_TOKEN wins over it)
    token: SecretStr | None = None
    #: the app's address as users reach it (https://review.example.com); notifications link to job pages
    public_url: str | None = None

    @field_validator("token")
    @classmethod
    def _long_enough(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and len(v.get_secret_value()) < MIN_TOKEN_CHARS:
            raise ValueError(f"the serve token must have at least {MIN_TOKEN_CHARS} characters")
        return v

    @field_validator("public_url")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("https://", "http://")):
            raise ValueError("public_url is an http(s):// address")
        return v.rstrip("/") if v else v


class Settings(_Strict):
    database_url: str = "sqlite:///.pipeline/pipeline.db"
    broker_url: str = "memory://"
    redis_url: str | None = None
    storage_url: str = "file://./output"
    budget: BudgetCaps = BudgetCaps()
    providers: dict[str, ProviderConfig] = Field(default_factory=dict)
    worker: WorkerSettings = WorkerSettings()
    batch: BatchSettings = BatchSettings()
    flex: FlexSettings = FlexSettings()
    #: allow reference URLs that resolve to private, loopback or link-local addresses
    allow_private_references: bool = False
    #: the public https URL where `pipeline callbacks` is reachable from the internet; when set, task APIs
    #: (Kie.ai) are asked to call back there instead of only being polled
    public_base_url: str | None = None
    #: job notifications (a manifest's own `notify:` overrides these keys for its job)
    notify: NotifySettings | None = None
    #: the review web app (`pipeline serve`)
    serve: ServeSettings = ServeSettings()
    #: "text" or "json" (one JSON object a line)
    log_format: Literal["text", "json"] = "text"
    log_level: str = "WARNING"
    #: where config came from, for messages only
    source: str = "defaults"

    @field_validator("broker_url")
    @classmethod
    def _known_broker(cls, v: str) -> str:
        if broker_kind(v) is None:  # the value is not echoed: a broker URL may carry a password
            raise ValueError("must be memory://, redis://host:6379/0 (rediss://, sentinel://) or "
                             "amqp://user:password@host:5672/vhost (amqps://)")
        return v

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, v: str) -> str:
        problem = database_url_problem(v)
        if problem:
            raise ValueError(problem)
        return v

    @field_validator("public_base_url")
    @classmethod
    def _public_url(cls, v: str | None) -> str | None:
        if v is None or not v.strip():
            return None
        v = v.strip().rstrip("/")
        if not v.startswith(("https://", "http://")) or "@" in v.split("/")[2]:
            raise ValueError("must be an http(s) URL without credentials, e.g. https://hooks.example.com/pipeline")
        return v

    @property
    def embedded(self) -> bool:
        return self.broker_url.startswith("memory://")

    def provider(self, name: str) -> ProviderConfig:
        try:
            return self.providers[name]
        except KeyError:
            raise InputError(f"unknown provider {name!r} (known: {', '.join(sorted(self.providers))})") from None


#: top-level keys that take an env var PIPELINE_<KEY>
_TOP_KEYS = tuple(k for k in Settings.model_fields if k != "source")


def _read_yaml(path: Path) -> dict[str, Any]:
    raw = read_capped(path, MAX_CONFIG_BYTES, what="config", where=str(path))  # regular files only
    try:
        data = yaml.safe_load(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise InputError("config is not UTF-8", where=str(path)) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise InputError(f"YAML error: {getattr(e, 'problem', None) or e}", where=where) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError("config must be a mapping", where=str(path))
    return data


def _merge_providers(overrides: Mapping[str, Any], where: str) -> dict[str, Any]:
    merged: dict[str, Any] = {name: copy.deepcopy(p) for name, p in PRESETS.items()}
    if not isinstance(overrides, Mapping):
        raise InputError("providers must be a mapping of name to settings", where=where)
    for name, over in overrides.items():
        if over is None:
            merged.pop(name, None)  # `name: null` removes a preset
            continue
        if not isinstance(over, Mapping):
            raise InputError(f"provider {name!r} must be a mapping", where=where)
        base = merged.get(str(name), {})
        entry = {**base, **over}
        for sub in ("limits", "prices", "images"):
            if isinstance(base.get(sub), dict) and isinstance(over.get(sub), dict):
                entry[sub] = {**base[sub], **over[sub]}
        merged[str(name)] = entry
    for name, entry in merged.items():
        entry["name"] = name
    return merged


def load_settings(config_path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Build Settings from defaults, the config file and the environment. Raises InputError (exit 2)."""
    env = os.environ if env is None else env
    data: dict[str, Any] = {}
    source = "defaults"
    explicit = config_path or env.get("PIPELINE_CONFIG")
    path = Path(explicit) if explicit else Path(CONFIG_FILE)
    if explicit or path.exists():
        if explicit and not path.exists():
            raise InputError("config file not found", where=str(path))
        data = _read_yaml(path)
        source = str(path)
    unknown = sorted(set(data) - set(_TOP_KEYS))
    if unknown:
        raise InputError(f"unknown config key(s): {', '.join(unknown)}", where=source)
    for key in _TOP_KEYS:
        var = f"PIPELINE_{key.upper()}"
        if var in env:
            value: Any = env[var]
            if key in ("budget", "providers", "worker", "batch", "flex", "notify", "serve"):
                try:
                    value = yaml.safe_load(value)
                except yaml.YAMLError:
                    raise InputError("must be YAML or JSON", where=var) from None
            data[key] = value
    if env.get(SERVE_TOKEN_ENV):
        serve = data.get("serve") or {}
        if not isinstance(serve, Mapping):
            raise InputError("serve must be a mapping", where=source)
        data["serve"] = {**serve, "token": env[SERVE_TOKEN_ENV]}
    data["providers"] = _merge_providers(data.get("providers") or {}, source)
    data["source"] = source
    try:
        return Settings.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        var = f"PIPELINE_{str(err['loc'][0]).upper()}" if err["loc"] else ""
        raise InputError(f"{loc}: {msg}", where=var if var in env else source) from None


def api_key(provider: ProviderConfig, env: Mapping[str, str] | None = None) -> str | None:
    """The provider's key from the env var its config names (never logged, never stored)."""
    if not provider.api_key_env:
        return None
    env = os.environ if env is None else env
    return env.get(provider.api_key_env) or None


def webhook_url(notify: NotifySettings, env: Mapping[str, str] | None = None) -> str | None:
    """The webhook a notify block names: its URL, or the value of the variable webhook_url_env names."""
    if notify.webhook_url_env:
        env = os.environ if env is None else env
        return env.get(notify.webhook_url_env) or None
    return notify.webhook_url
