"""Celery task ``optforge.study_tick``: one scheduling step of a search study.

Registered through the service's Celery app ``include`` (``shared_task`` binds it to whichever
app loads this module). Sent by ``train_run`` when a trial's run reaches a terminal status, by the
reaper for running studies, and by ``POST /v1/studies``. Ticks of one study serialise on the
study row lock, so duplicate or concurrent deliveries are harmless. No torch import here.
"""

from __future__ import annotations

import logging

from celery import shared_task
from sqlalchemy import select

from core.db import session_scope
from core.models import SearchStudy, StudyStatus
from search.scheduler import tick

log = logging.getLogger(__name__)


@shared_task(name="optforge.study_tick", ignore_result=True, acks_late=False)
def study_tick(study_id: int) -> dict[str, int]:
    """Tell finished trials of study ``study_id`` and ask new ones (search.scheduler.tick)."""
    try:
        counts = tick(int(study_id))
    except LookupError:
        log.warning("study_tick: study %s does not exist", study_id)
        return {}
    log.info("study_tick %s: %s", study_id, counts)
    return counts


def running_study_ids() -> list[int]:
    """Ids of running studies (the reaper sends ``study_tick`` for each)."""
    with session_scope() as session:
        return list(
            session.scalars(
                select(SearchStudy.id).where(SearchStudy.status == StudyStatus.running)
            )
        )
