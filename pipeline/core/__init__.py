"""The pipeline's logic as plain functions over the database: no Celery in here."""
