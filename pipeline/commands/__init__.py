"""CLI commands that live beside their area (each module has `register(app)`); cli.py wires them in.

common.py holds what every command shares (consoles, options, error exits, settings, runtime); commands import
it, never pipeline.cli (which imports them).
"""
