#!/usr/bin/env bash
# Development helper (before the first release only): regenerate migrations/versions/0001 from the models.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -f /tmp/pipeline-gen.db migrations/versions/0001_initial_schema.py
.venv/bin/python - <<'PY'
from alembic import command
from pipeline.db.migrate import alembic_config
command.revision(alembic_config("sqlite:////tmp/pipeline-gen.db"), message="initial schema", autogenerate=True, rev_id="0001")
PY
.venv/bin/ruff check --fix -q migrations >/dev/null || true
.venv/bin/ruff format -q migrations
