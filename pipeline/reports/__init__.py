"""Reports: SQL over items, attempts and the ledger; rendered as tables, JSON or CSV."""
