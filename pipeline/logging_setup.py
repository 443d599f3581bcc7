"""Logging, configured in one place (`configure_logging(settings)`, called by the CLI).

- `log_format: text` (default): `time LEVEL logger: message [job 3 item 17]`; `json`: one JSON object a line
  with time (UTC ISO), level, logger, message, job_id and item_id when known, and exc for a traceback.
- job_id / item_id come from context variables that `log_context()` sets (core.process_item does, around one
  item), so every line logged while an item is processed carries them, whichever module logs it.
- Keys never reach a log: a filter replaces the value of every configured `api_key_env` variable, and any
  8-character part of it in any case, URL-encoded, base64 or hex (pipeline.redact), in the message, its
  arguments, the traceback and stack text with `[redacted]`; it runs when a record is made (so every handler
  gets the redacted record) and again on our handler.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import IO, Any

from pipeline.config import Settings, api_key
from pipeline.errors import InputError
from pipeline.redact import Redactor, install

job_id_var: ContextVar[int | None] = ContextVar("pipeline_job_id", default=None)
item_id_var: ContextVar[int | None] = ContextVar("pipeline_item_id", default=None)

#: what a secret is replaced with
REDACTED = "[redacted]"
#: shorter values are not treated as secrets (redacting them would mangle ordinary text)
MIN_SECRET_CHARS = 6
#: third-party loggers kept at WARNING whatever the level (request lines, per-task lines)
NOISY = ("httpx", "httpcore", "celery.app.trace", "celery.worker.strategy", "uvicorn.access")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s%(context)s"


@contextlib.contextmanager
def log_context(*, job_id: int | None = None, item_id: int | None = None) -> Iterator[None]:
    """Tag every log line in this block (this thread or task) with the job and item ids; both are restored
    after it, including a job id set inside with `set_log_job`."""
    job_token, item_token = job_id_var.set(job_id), item_id_var.set(item_id)
    try:
        yield
    finally:
        item_id_var.reset(item_token)
        job_id_var.reset(job_token)


def set_log_job(job_id: int | None) -> None:
    """Set the job id of the current log context (when it is learnt inside a `log_context` block)."""
    job_id_var.set(job_id)


class ContextFilter(logging.Filter):
    """Puts job_id and item_id (None when unknown) on each record, unless the caller gave them in `extra`."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "job_id", None) is None:
            record.job_id = job_id_var.get()
        if getattr(record, "item_id", None) is None:
            record.item_id = item_id_var.get()
        return True


class RedactFilter(logging.Filter):
    """Replaces secret values in the message (after formatting its arguments), traceback and stack text."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self._redactor = Redactor(secrets, mark=REDACTED, min_secret_chars=MIN_SECRET_CHARS)

    @property
    def active(self) -> bool:
        return bool(self._redactor)

    def redact(self, text: str) -> str:
        return self._redactor(text)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.active:
            return True
        try:
            message = record.getMessage()
        except Exception:  # arguments that do not fit the format: keep both, as text
            message = f"{record.msg!s} {record.args!r}"
        redacted = self.redact(message)
        if redacted != message:  # otherwise msg and args stay as they were, for handlers that read args
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


def _context_suffix(record: logging.LogRecord) -> str:
    parts = [f"{k} {v}" for k, v in (("job", getattr(record, "job_id", None)),
                                       ("item", getattr(record, "item_id", None))) if v is not None]
    return f" [{' '.join(parts)}]" if parts else ""


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        record.context = _context_suffix(record)
        return super().format(record)


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, job_id / item_id when known, exc / stack if any."""

    def format(self, record: logging.LogRecord) -> str:
        obj: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("job_id", "item_id"):
            value = getattr(record, key, None)
            if value is not None:
                obj[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            obj["exc"] = record.exc_text
        if record.stack_info:
            obj["stack"] = record.stack_info
        return json.dumps(obj, ensure_ascii=False, default=str)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is at the time of each record (test runners swap it)."""

    @property
    def stream(self) -> IO[str]:
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


_base_factory: Callable[..., logging.LogRecord] | None = None


def _redact_at_creation(redact: RedactFilter) -> None:
    """Redact every record when it is made, so handlers other than ours (a library's, a test runner's) never
    see a key either. Installed once over the original factory; a later configure replaces the secrets."""
    global _base_factory
    if _base_factory is None:
        _base_factory = logging.getLogRecordFactory()
    base = _base_factory

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = base(*args, **kwargs)
        redact.filter(record)
        return record

    logging.setLogRecordFactory(factory)


def secrets_of(settings: Settings, env: Mapping[str, str] | None = None) -> list[str]:
    """The values of every configured provider's api_key_env variable that is set."""
    return sorted({k for p in settings.providers.values() if (k := api_key(p, env))})


def configure_logging(settings: Settings, *, stream: IO[str] | None = None,
                      env: Mapping[str, str] | None = None) -> logging.Handler:
    """Install the one pipeline handler on the root logger (replacing one installed before; other handlers,
    such as pytest's, are left alone), at the configured level and format."""
    level = logging.getLevelNamesMapping().get(settings.log_level.upper())
    if level is None:
        raise InputError(f"unknown log level {settings.log_level!r} (DEBUG, INFO, WARNING, ERROR)", where="log_level")
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_pipeline", False):
            root.removeHandler(h)
    handler: logging.Handler = logging.StreamHandler(stream) if stream is not None else _StderrHandler()
    handler._pipeline = True  # type: ignore[attr-defined]
    handler.addFilter(ContextFilter())
    secrets = secrets_of(settings, env)
    install(secrets)  # failure reasons and error details stored by this process are redacted too
    redact = RedactFilter(secrets)
    handler.addFilter(redact)
    _redact_at_creation(redact)
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else TextFormatter())
    root.addHandler(handler)
    root.setLevel(level)
    for name in NOISY:
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.captureWarnings(True)  # Python warnings (a library's SecurityWarning) become log lines too
    return handler
