"""spinenode Celery workers: analysis, encoding and export stages."""
