"""Forget cached settings, engines and the Celery client (shared by tests)."""

from __future__ import annotations


def reset_settings_caches() -> None:
    """Forget cached settings, engines and the Celery client so a changed environment takes
    effect (the old engines' pools close when they are collected)."""
    from core.broker import get_celery_client
    from core.config import get_settings
    from core.db import get_engine

    get_settings.cache_clear()
    get_engine.cache_clear()
    get_celery_client.cache_clear()
