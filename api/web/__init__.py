"""Server-rendered web pages (leaderboard, studies, runs, recipes).

``router`` is included by ``api.main.create_app`` at ``/``; ``STATIC_DIR`` is mounted at
``/static`` (Chart.js is vendored under ``static/vendor``: no CDN, nothing fetched at runtime).
"""

from __future__ import annotations

from api.web.pages import router
from api.web.render import STATIC_DIR, TEMPLATES_DIR

__all__ = ["STATIC_DIR", "TEMPLATES_DIR", "router"]
