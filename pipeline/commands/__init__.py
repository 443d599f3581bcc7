"""CLI commands that live beside their area (each module has `register(app)`); cli.py wires them in."""
