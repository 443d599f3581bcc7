"""The system of record. Every item's state lives in a row and changes only by conditional update.

Datetimes are naive UTC. Money is Numeric(14, 6) and Decimal in Python.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from pipeline.money import ZERO
from pipeline.redact import MAX_DETAIL_CHARS, MAX_REASON_CHARS, bounded
from pipeline.states import AttemptOutcome, BatchState, CacheState, ItemState, JobState, ProviderStatus

Money = Numeric(14, 6, asdecimal=True)


class BoundedText(TypeDecorator[str]):
    """TEXT whose every written value goes through `pipeline.redact.bounded`: configured keys cut out, NUL
    replaced (Postgres refuses it, SQLite would keep it), at most `limit` characters. For text that comes from
    providers and errors (failure reasons, attempt details), whichever code path writes it."""

    impl = Text
    cache_ok = True

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else bounded(str(value), self.limit)

    def process_literal_param(self, value: str | None, dialect: Dialect) -> str:
        return "" if value is None else bounded(str(value), self.limit)

    @property
    def python_type(self) -> type[str]:
        return str
#: ids: BIGINT on Postgres, INTEGER on SQLite (where only INTEGER PRIMARY KEY autoincrements)
Id = BigInteger().with_variant(Integer(), "sqlite")

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, list[Any]: JSON}


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    state: Mapped[str] = mapped_column(String(16), default=JobState.ACTIVE)
    mode: Mapped[str] = mapped_column(String(8), default="sync")
    #: items go through the provider's batch tier (mode batch, or auto with a deadline that allows it)
    batch: Mapped[bool] = mapped_column(Boolean, default=False)
    providers: Mapped[list[Any]] = mapped_column(JSON, default=list)
    #: the validated manifest as submitted last (secrets never appear in manifests)
    manifest: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    manifest_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    region: Mapped[str | None] = mapped_column(String(16), nullable=True)
    max_usd: Mapped[Decimal | None] = mapped_column(Money, nullable=True)
    max_price_usd: Mapped[Decimal | None] = mapped_column(Money, nullable=True)
    spent_usd: Mapped[Decimal] = mapped_column(Money, default=ZERO)
    reserved_usd: Mapped[Decimal] = mapped_column(Money, default=ZERO)
    #: highest budget alert threshold already sent (50, 80, 100)
    alerted_pct: Mapped[int] = mapped_column(Integer, default=0)
    deadline_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)


class Item(Base):
    __tablename__ = "items"
    __table_args__ = (
        UniqueConstraint("job_id", "key"),
        Index("ix_items_due", "state", "next_attempt_at"),
        Index("ix_items_job_state", "job_id", "state"),
        #: submit looks up other jobs writing the same keys (core.output_keys)
        Index("ix_items_output_key", "output_key"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    #: the manifest's item id
    key: Mapped[str] = mapped_column(String(200))
    #: an ItemState; written only by pipeline.core.lifecycle, along pipeline.states.TRANSITIONS
    state: Mapped[str] = mapped_column(String(16), default=ItemState.PENDING)
    prompt: Mapped[str] = mapped_column(Text)
    resolution: Mapped[str] = mapped_column(String(4))
    aspect_ratio: Mapped[str] = mapped_column(String(8))
    output_format: Mapped[str] = mapped_column(String(8))
    output_key: Mapped[str] = mapped_column(Text)
    #: references as resolved at submit: [{"source", "sha256", "mime_type"}]
    references: Mapped[list[Any]] = mapped_column(JSON, default=list)
    tags: Mapped[list[Any]] = mapped_column(JSON, default=list)
    #: sha256 of the canonical request (model, prompt, resolution, ratio, format, reference hashes)
    cache_key: Mapped[str] = mapped_column(String(64), index=True)
    #: hash of the item's whole spec, to tell "changed" on resubmission
    spec_hash: Mapped[str] = mapped_column(String(64))
    force: Mapped[bool] = mapped_column(Boolean, default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime)
    queued_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    lease_owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    #: index into the job's provider list currently used (failover moves it on)
    provider_index: Mapped[int] = mapped_column(Integer, default=0)
    provider: Mapped[str | None] = mapped_column(String(64), nullable=True)
    #: why it failed or waits, for people: redacted and at most MAX_REASON_CHARS (pipeline.redact)
    failure_reason: Mapped[str | None] = mapped_column(BoundedText(MAX_REASON_CHARS), nullable=True)
    stored_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    thumb_key: Mapped[str | None] = mapped_column(Text, nullable=True)
    cost_usd: Mapped[Decimal] = mapped_column(Money, default=ZERO)
    #: the budget a running item holds (its call's reservation), and the periods it was reserved in
    #: (["day:2026-11-27", "month:2026-11"]): whoever settles or gives it back settles against exactly those
    reserved_usd: Mapped[Decimal] = mapped_column(Money, default=ZERO)
    reserved_periods: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class Attempt(Base):
    """One row per provider call, written before the call and settled after it."""

    __tablename__ = "attempts"
    __table_args__ = (Index("ix_attempts_provider_started", "provider", "started_at"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), index=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    provider: Mapped[str] = mapped_column(String(64))
    lease_owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    outcome: Mapped[str] = mapped_column(String(16), default=AttemptOutcome.STARTED)
    http_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error_class: Mapped[str | None] = mapped_column(String(32), nullable=True)
    error_detail: Mapped[str | None] = mapped_column(BoundedText(MAX_DETAIL_CHARS), nullable=True)
    latency_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)
    cost_usd: Mapped[Decimal | None] = mapped_column(Money, nullable=True)
    cost_source: Mapped[str | None] = mapped_column(String(16), nullable=True)
    #: true until settled with a known outcome; stays true for timeouts and abandoned calls
    maybe_billed: Mapped[bool] = mapped_column(Boolean, default=True)
    #: the provider's handle (Replicate prediction id, batch name), saved before waiting
    remote_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    started_at: Mapped[datetime] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class CacheEntry(Base):
    """Prompt-hash cache and idempotency key: taken (pending) before the call, ready after the store."""

    __tablename__ = "cache_entries"

    cache_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    state: Mapped[str] = mapped_column(String(16), default=CacheState.PENDING)
    owner_item_id: Mapped[int | None] = mapped_column(Id, nullable=True)
    object_key: Mapped[str | None] = mapped_column(Text, nullable=True)
    content_type: Mapped[str | None] = mapped_column(String(32), nullable=True)
    provider: Mapped[str | None] = mapped_column(String(64), nullable=True)
    resolution: Mapped[str | None] = mapped_column(String(4), nullable=True)
    cost_usd: Mapped[Decimal | None] = mapped_column(Money, nullable=True)
    list_cost_usd: Mapped[Decimal | None] = mapped_column(Money, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)


class LedgerEntry(Base):
    """Cost ledger: one row per image paid for or answered from the cache (cost 0, list price saved)."""

    __tablename__ = "ledger"
    __table_args__ = (Index("ix_ledger_job_day", "job_id", "day"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), index=True)
    attempt_id: Mapped[int | None] = mapped_column(ForeignKey("attempts.id", ondelete="SET NULL"),
                                                   nullable=True)
    provider: Mapped[str] = mapped_column(String(64))
    #: image | cache_hit | call (billed call that gave no image)
    kind: Mapped[str] = mapped_column(String(16))
    resolution: Mapped[str] = mapped_column(String(4))
    cost_usd: Mapped[Decimal] = mapped_column(Money)
    list_cost_usd: Mapped[Decimal] = mapped_column(Money)
    cost_source: Mapped[str] = mapped_column(String(16), default="price_table")
    batch: Mapped[bool] = mapped_column(Boolean, default=False)
    day: Mapped[date] = mapped_column(Date)
    created_at: Mapped[datetime] = mapped_column(DateTime)


class ProviderState(Base):
    """Provider-level pause/park, shared by every worker."""

    __tablename__ = "provider_states"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), default=ProviderStatus.OK)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    until: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime)


class BudgetPeriod(Base):
    """Global daily/monthly caps: reserved and spent per period, reserved by one conditional update."""

    __tablename__ = "budget_periods"

    period: Mapped[str] = mapped_column(String(32), primary_key=True)  # "day:2026-11-27", "month:2026-11"
    cap_usd: Mapped[Decimal | None] = mapped_column(Money, nullable=True)
    spent_usd: Mapped[Decimal] = mapped_column(Money, default=ZERO)
    reserved_usd: Mapped[Decimal] = mapped_column(Money, default=ZERO)
    alerted_pct: Mapped[int] = mapped_column(Integer, default=0)


class Batch(Base):
    """A provider batch (Gemini batch mode): created, polled by the background loop, results matched back by key.

    A row is written (state `creating`, unique display_name) before the create call, so an unclear create is
    resolved by listing the provider's batches and matching display_name before anything is resubmitted."""

    __tablename__ = "batches"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    provider: Mapped[str] = mapped_column(String(64))
    display_name: Mapped[str] = mapped_column(String(128), unique=True)
    #: the provider's name for it ("batches/..."), known once the create answered
    remote_name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    #: a pipeline.states.BatchState: creating | running | done | cancelled | lost
    state: Mapped[str] = mapped_column(String(16), default=BatchState.CREATING)
    item_ids: Mapped[list[Any]] = mapped_column(JSON, default=list)
    remote_state: Mapped[str | None] = mapped_column(String(32), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    next_poll_at: Mapped[datetime] = mapped_column(DateTime)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)


class Schedule(Base):
    """A manifest registered to run on a cron (`pipeline schedule add`); `pipeline beat` fires it."""

    __tablename__ = "schedules"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    #: absolute path of the manifest, loaded again at every fire
    manifest_path: Mapped[str] = mapped_column(Text)
    cron: Mapped[str] = mapped_column(String(120))
    #: IANA zone the cron is read in
    timezone: Mapped[str] = mapped_column(String(64))
    #: what happens to a fire time that passed while no beat ran: run-once | skip
    missed: Mapped[str] = mapped_column(String(16), default="run-once")
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    #: fire times at or before this are handled (fired, skipped, or passed while paused)
    handled_through: Mapped[datetime] = mapped_column(DateTime)
    #: the latest fire time that submitted a run
    last_fired_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)


class ScheduleFire(Base):
    """One row per fire time of a schedule. The unique (schedule_name, fire_time) is what makes a fire happen
    once: the row is inserted in the transaction that submits the run's job, so both exist or neither."""

    __tablename__ = "schedule_fires"
    __table_args__ = (UniqueConstraint("schedule_name", "fire_time"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    schedule_name: Mapped[str] = mapped_column(String(128))
    #: the cron time this fire is for (naive UTC)
    fire_time: Mapped[datetime] = mapped_column(DateTime)
    #: submitted | skipped (missed while down, `missed: skip`)
    outcome: Mapped[str] = mapped_column(String(16))
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), nullable=True)
    job_name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)


class ItemReview(Base):
    """A person's verdict on an item's current image (`pipeline review`, the review app), and an edited prompt
    waiting to be applied by the next regeneration. No row means unreviewed."""

    __tablename__ = "item_reviews"
    __table_args__ = (Index("ix_item_reviews_job_state", "job_id", "state"),)

    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), primary_key=True,
                                         autoincrement=False)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    #: unreviewed | approved | rejected
    state: Mapped[str] = mapped_column(String(16), default="unreviewed")
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: the prompt a person wrote in place of the manifest's; regenerating applies it (and so its cache key)
    prompt_override: Mapped[str | None] = mapped_column(Text, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime)


class ItemOutput(Base):
    """An earlier image of an item, kept (copied under `_history/`) when the item was regenerated."""

    __tablename__ = "item_outputs"
    __table_args__ = (UniqueConstraint("item_id", "seq"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), index=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    #: 1 for the item's first image, then 2, 3, ...
    seq: Mapped[int] = mapped_column(Integer)
    #: the kept copy of the image, and of its thumbnail
    object_key: Mapped[str] = mapped_column(Text)
    thumb_key: Mapped[str | None] = mapped_column(Text, nullable=True)
    prompt: Mapped[str] = mapped_column(Text)
    cache_key: Mapped[str] = mapped_column(String(64))
    #: the item's state when the image was made (succeeded | cached)
    state: Mapped[str] = mapped_column(String(16))
    provider: Mapped[str | None] = mapped_column(String(64), nullable=True)
    cost_usd: Mapped[Decimal] = mapped_column(Money, default=ZERO)
    #: the review that sent it back (rejected) and its note
    review_state: Mapped[str] = mapped_column(String(16))
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    produced_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    archived_at: Mapped[datetime] = mapped_column(DateTime)


class Notification(Base):
    """One job event (finished, failed, budget) of one run of a job, claimed exactly once: the unique
    (job_id, event, run) row is inserted in the transaction that saw the event happen, then delivered by the
    one process that moves it from `pending` to `sending` (compare-and-set)."""

    __tablename__ = "notifications"
    __table_args__ = (UniqueConstraint("job_id", "event", "run"), Index("ix_notifications_state", "state"))

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    #: finished | failed | budget
    event: Mapped[str] = mapped_column(String(16))
    #: the job's run: 1 + the runs that ended before this event (a rerun is a new run)
    run: Mapped[int] = mapped_column(Integer)
    #: pending | sending | sent | failed | skipped (the job does not ask for this event, or no webhook)
    state: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class TaskCallback(Base):
    """A task API's completion callback (Kie.ai callBackUrl), keyed by the unguessable token in its URL.

    The adapter inserts the row (token, provider) before it creates the task and binds the task id after;
    `pipeline callbacks` stores the delivered body; the polling adapter reads it at its next poll."""

    __tablename__ = "task_callbacks"
    __table_args__ = (Index("ix_task_callbacks_provider_remote", "provider", "remote_id"),)

    #: URL-safe random token (256 bits), the capability the callback URL carries
    token: Mapped[str] = mapped_column(String(64), primary_key=True)
    provider: Mapped[str] = mapped_column(String(64))
    #: the provider's task id, once known (bound by the adapter, or taken from the first delivery)
    remote_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    #: the first terminal delivery's JSON body (later deliveries only count)
    payload: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    deliveries: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    received_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
