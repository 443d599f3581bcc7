"""Prometheus metrics for workers (`pipeline worker --metrics-port N`).

    queries.py     one SQL snapshot of everything exported (cheap COUNTs and GROUP BYs), a plain function
    collector.py   the prometheus_client Collector over it and the HTTP server

Every value is read from the database at scrape time, so the numbers are cluster-wide and exact whichever
worker is scraped (and survive restarts): scrape one worker, or aggregate with max(), not sum().
"""
