"""SQLAlchemy 2 models and engine/session factories (built per process, never at import)."""
