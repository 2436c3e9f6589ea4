"""Workers: model, data and trainer, plus the Celery app, tasks and reaper of the service."""
