"""Report queries on both databases: grouping by tag (a JSON list), totals, and the --since/--until window."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

from pipeline.reports.queries import NO_TAG, ledger_report, ledger_totals
from tests.reports.rows import LedgerEntry, add_items, add_job, bulk, ledger_row, migrated

NOW = datetime(2026, 3, 10, 12, 0, 0)
TAGS = [["audio", "bestseller"], ["audio"], [], ["kitchen", "bestseller"], ["bestseller", "audio"]]


def test_by_tag_spreads_rows_over_their_tags(db_url: str) -> None:
    with migrated(db_url) as sessions:
        job_id = add_job(sessions, "tags", NOW)
        ids = add_items(sessions, job_id, len(TAGS), NOW, lambda i: {"tags": TAGS[i]})
        other = add_job(sessions, "other", NOW)
        other_ids = add_items(sessions, other, 1, NOW, lambda i: {"tags": ["audio"]})
        bulk(sessions, LedgerEntry, [
            ledger_row(job_id, ids[0], NOW, cost="0.05"),
            ledger_row(job_id, ids[1], NOW, cost="0.10", list_cost="0.24", resolution="4K"),
            ledger_row(job_id, ids[2], NOW, cost="0.07"),
            ledger_row(job_id, ids[3], NOW - timedelta(days=2), cost="0.09"),
            ledger_row(job_id, ids[4], NOW, kind="cache_hit", cost="0", provider="cache"),
            ledger_row(other, other_ids[0], NOW, cost="1.00"),
        ])
        with sessions() as s:
            rows = ledger_report(s, "tag", job_id=job_id)
            assert list(rows) == ["audio", "bestseller", "kitchen", NO_TAG]
            assert rows["audio"].images == 2 and rows["audio"].cache_hits == 1
            assert rows["audio"].cost_usd == Decimal("0.15")
            assert rows["audio"].list_cost_usd == Decimal("0.134") * 2 + Decimal("0.24")
            assert rows["bestseller"].cost_usd == Decimal("0.14") and rows["bestseller"].cache_hits == 1
            assert rows["kitchen"].cost_usd == Decimal("0.09")
            assert rows[NO_TAG].cost_usd == Decimal("0.07")
            total = ledger_totals(s, job_id=job_id)
            assert total.cost_usd == Decimal("0.31") and total.images == 4 and total.cache_hits == 1

            recent = ledger_report(s, "tag", job_id=job_id, since=NOW - timedelta(hours=1))
            assert "kitchen" not in recent and recent["bestseller"].cost_usd == Decimal("0.05")
            old = ledger_report(s, "tag", job_id=job_id, until=NOW - timedelta(hours=1))
            assert list(old) == ["bestseller", "kitchen"]

            everything = ledger_report(s, "tag")
            assert everything["audio"].cost_usd == Decimal("1.15")
            assert ledger_totals(s).cost_usd == Decimal("1.31")
            by_job = ledger_report(s, "job")
            assert by_job["other"].cost_usd == Decimal("1.00") and by_job["tags"].cost_usd == Decimal("0.31")
            by_day = ledger_report(s, "day", job_id=job_id)
            assert list(by_day) == [str((NOW - timedelta(days=2)).date()), str(NOW.date())]
            by_res = ledger_report(s, "resolution", job_id=job_id, since=NOW - timedelta(hours=1))
            assert by_res["4K"].list_cost_usd == Decimal("0.24")
