"""Scheduled runs: a manifest's `schedule: {cron, timezone}` registered with `pipeline schedule add`, fired by
`pipeline beat`.

    cron.py    when a schedule fires, what its run is called, which template variables it sees (pure)
    store.py   the schedules table: add, list, remove, pause, resume
    fire.py    fire_due(sessions, now, load_run): fires each due run exactly once, across beats and restarts
    beat.py    the `pipeline beat` process: dispatcher and sweeper ticks plus fire_due
"""
