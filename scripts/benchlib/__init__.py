"""Bench-only helpers for scripts/bench.py: a recording sandbox, throwaway services, the baselines (a Celery
`rate_limit` app, the guide's naive client) and the scenarios. Nothing here is imported by `pipeline/`.

Modules: recorder (ASGI middleware, per-run figures), sandbox (the recording sandbox server), infra (Postgres
database, Redis databases, subprocesses), pipeline_run (config, manifest, workers, completion), celery_bench
(the baseline Celery app and its worker entry point), baselines (celery and naive runs), scenarios
(throughput, overhead), report (machine facts, table).
"""
