"""The Optuna adapter: the ONLY optforge module that imports optuna.

Optuna lives in its own storage (``settings.optuna_storage_url``: a separate SQLite file, or a
Postgres database/schema via ``search_path``), never in our tables (services.md §0.3). One central
asker (search/scheduler.py) calls :func:`ask` and :func:`tell`; workers never touch Optuna.

* Samplers: ``tpe`` (default), ``nsga2``, ``gp``, ``random``; the sampler is rebuilt before
  every ask with the seed ``derive_seed(study_seed, n_trials_so_far)`` so a replay of the same
  history asks the same sequence of recipes whatever process asks, and consecutive asks never
  repeat a random stream (services.md §0.5).
* Objectives: multi-objective ``[val_loss, state_bytes_per_param]`` (both minimised) by default;
  or one of ``val_loss`` / ``steps_to_target``.
* Constraint: ``max_state_bytes_per_param`` is recorded with Optuna 5's ``Trial.set_constraint``
  (value ``bytes - max``; feasible when <= 0) before the trial is told.
* Stale trials: the scheduler fails/retries them itself (ask/tell has no heartbeat, §0.1);
  :func:`tell` always uses ``skip_if_finished=True``.
"""

from __future__ import annotations

import logging
import random
import re
import time
import warnings
from functools import lru_cache
from typing import Any

import optuna
from optuna.trial import TrialState

from search.space import DesignSpace
from search.suggest import suggest_axes, suggest_params

log = logging.getLogger(__name__)

OBJECTIVES = ("val_loss", "state_bytes_per_param", "steps_to_target")
SAMPLERS = ("tpe", "nsga2", "gp", "random")
DEFAULT_OBJECTIVES = ("val_loss", "state_bytes_per_param")
CONSTRAINT_KEY = "state_bytes_per_param"

optuna.logging.set_verbosity(optuna.logging.WARNING)


def check_objectives(objectives: list[str]) -> list[str]:
    """Validate an objectives list (multi: val_loss + state_bytes_per_param; single: one)."""
    objs = list(objectives) or list(DEFAULT_OBJECTIVES)
    bad = [o for o in objs if o not in OBJECTIVES]
    if bad:
        raise ValueError(f"unknown objective(s) {bad}; allowed: {list(OBJECTIVES)}")
    if len(set(objs)) != len(objs):
        raise ValueError(f"duplicate objectives: {objs}")
    if "steps_to_target" in objs and len(objs) > 1:
        raise ValueError("steps_to_target is a single-objective study")
    return objs


def derive_seed(seed: int | None, n_trials: int) -> int | None:
    """The sampler seed for the tick that follows ``n_trials`` asked trials."""
    if seed is None:
        return None
    return (int(seed) * 1_000_003 + n_trials) % (2**32)


def make_sampler(name: str, seed: int | None) -> optuna.samplers.BaseSampler:
    """A sampler by name (TPE has Optuna 5's constant liar on by default)."""
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=10)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=8)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ValueError(f"unknown sampler {name!r}; allowed: {list(SAMPLERS)}")


@lru_cache(maxsize=8)
def get_storage(url: str) -> optuna.storages.BaseStorage:
    """Optuna's RDB storage for ``url`` (pool_pre_ping and a small pool for Postgres, §2.3).

    A Postgres URL may put Optuna in its own schema (``?options=-csearch_path%3Doptuna``); the
    schema is created if missing. Table creation races between processes (optuna#1092) are
    retried.
    """
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs = {"connect_args": {"timeout": 30}}
    else:
        kwargs = {"pool_pre_ping": True, "pool_size": 2, "max_overflow": 2}
        _ensure_schema(url)
    for attempt in range(3):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
        except Exception:  # noqa: BLE001 - concurrent create_all/version stamping
            if attempt == 2:
                raise
            time.sleep(0.5 + random.random())
    raise AssertionError("unreachable")


def search_path_schema(url: str) -> str | None:
    """The schema named by a ``search_path`` option in a Postgres URL (None if absent)."""
    match = re.search(r"search_path(?:%3D|=)([A-Za-z_][A-Za-z0-9_]*)", url)
    return match.group(1) if match else None


def _ensure_schema(url: str) -> None:
    schema = search_path_schema(url)
    if schema is None:
        return
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
    finally:
        engine.dispose()


def check_separate_storage(optuna_url: str, database_url: str) -> None:
    """Refuse an Optuna storage that shares our database without a schema of its own.

    Optuna creates ``studies``/``trials``/``version_info`` and stamps the default
    ``alembic_version`` table wherever it connects (services.md §0.3).
    """
    if _database_of(optuna_url) == _database_of(database_url) and not search_path_schema(
        optuna_url
    ):
        raise ValueError(
            "OPTFORGE_OPTUNA_STORAGE_URL must be a database of its own (or a Postgres schema "
            "via ?options=-csearch_path%3Doptuna), not OPTFORGE_DATABASE_URL"
        )


def _database_of(url: str) -> tuple[Any, ...]:
    """(backend, host, port, database) of a URL: the driver, user and options do not matter."""
    from sqlalchemy.engine import make_url

    u = make_url(url)
    return (u.get_backend_name(), u.host, u.port, u.database)


def _storage_url(url: str | None) -> str:
    if url:
        return url
    from core.config import get_settings

    settings = get_settings()
    settings.ensure_dirs()
    check_separate_storage(settings.optuna_storage_url, settings.database_url)
    return settings.optuna_storage_url


def open_study(
    name: str,
    objectives: list[str],
    sampler: str = "tpe",
    seed: int | None = None,
    n_asked: int = 0,
    url: str | None = None,
) -> optuna.Study:
    """Create or load the Optuna twin of a study, with the sampler for this tick."""
    objs = check_objectives(objectives)
    directions = [optuna.study.StudyDirection.MINIMIZE] * len(objs)
    study = optuna.create_study(
        study_name=name,
        storage=get_storage(_storage_url(url)),
        sampler=make_sampler(sampler, derive_seed(seed, n_asked)),
        directions=directions,
        load_if_exists=True,
    )
    with warnings.catch_warnings():  # set_metric_names is "experimental" since Optuna 3.2
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if study.metric_names is None:  # optuna-dashboard labels the axes with these
            study.set_metric_names(objs)
    return study


def reseed(study: optuna.Study, sampler: str, seed: int | None, n_asked: int) -> None:
    """Give the study a fresh sampler seeded for ask number ``n_asked`` (replayable asks)."""
    study.sampler = make_sampler(sampler, derive_seed(seed, n_asked))


def ask(study: optuna.Study, space: DesignSpace) -> tuple[int, dict[str, Any]]:
    """Ask one trial; returns (trial number, flat params incl. fixed single choices)."""
    trial = study.ask()
    params = suggest_params(trial, space)
    return trial.number, params


def ask_axes(study: optuna.Study, axes: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """Ask one trial over flat axes (a benchmark's hyperparameter space); (number, params)."""
    trial = study.ask()
    return trial.number, suggest_axes(trial, axes)


def _trial_id(study: optuna.Study, number: int) -> int:
    return study._storage.get_trial_id_from_study_id_trial_number(  # noqa: SLF001
        study._study_id, number
    )


def tell(
    study: optuna.Study,
    number: int,
    state: str,
    values: list[float] | None = None,
    reason: str | None = None,
    constraint: float | None = None,
    step: int | None = None,
    intermediate: dict[int, float] | None = None,
    user_attrs: dict[str, Any] | None = None,
) -> None:
    """Finish trial ``number``: state ``complete`` | ``pruned`` | ``failed`` (idempotent).

    ``reason`` (failures), ``step`` (where a pruned trial stopped) and ``user_attrs`` (run id,
    recipe hash, page URLs) become user attributes and ``intermediate`` (eval step -> val
    loss) the trial's intermediate values: optuna-dashboard shows them as learning curves.
    """
    storage = study._storage  # noqa: SLF001
    trial_id = _trial_id(study, number)
    frozen = storage.get_trial(trial_id)
    if frozen.state.is_finished():
        return
    for key, value in (user_attrs or {}).items():
        storage.set_trial_user_attr(trial_id, key, value)
    for at_step, value in sorted((intermediate or {}).items()):
        storage.set_trial_intermediate_value(trial_id, int(at_step), float(value))
    if reason:
        storage.set_trial_user_attr(trial_id, "fail_reason", reason[:500])
    if step is not None:
        storage.set_trial_user_attr(trial_id, "pruned_step", int(step))
    if constraint is not None:
        storage.set_trial_system_attr(trial_id, f"constraints:{CONSTRAINT_KEY}", float(constraint))
    if state == "complete":
        study.tell(number, values=values, state=TrialState.COMPLETE, skip_if_finished=True)
    elif state == "pruned":
        study.tell(number, state=TrialState.PRUNED, skip_if_finished=True)
    else:
        study.tell(number, state=TrialState.FAIL, skip_if_finished=True)


def fail_orphans(study: optuna.Study, known: set[int]) -> list[int]:
    """FAIL running Optuna trials that have no optforge trial (asked, then our commit failed).

    Otherwise constant liar would avoid their region forever (services.md §2.4).
    """
    orphans = [
        t.number
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if t.number not in known
    ]
    for number in orphans:
        tell(study, number, "failed", reason="orphaned: not recorded by the scheduler")
    return orphans


def trial_states(study: optuna.Study) -> dict[int, str]:
    """Optuna's view: trial number -> state name (for consistency checks and the dashboard)."""
    return {t.number: t.state.name for t in study.get_trials(deepcopy=False)}


def delete(name: str, url: str | None = None) -> None:
    """Remove a study from Optuna's storage (tests, cleanup)."""
    optuna.delete_study(study_name=name, storage=get_storage(_storage_url(url)))


def param_importances(
    name: str, objectives: list[str], url: str | None = None
) -> dict[str, dict[str, float]]:
    """Objective -> {param: importance} of a study's complete trials, by Optuna's fANOVA.

    Empty when the study is not in the storage or has fewer than 3 complete trials (or no
    parameter that varies across all of them); the page then says so.
    """
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    storage_url = _storage_url(url)
    if not _sqlite_file_exists(storage_url):
        return {}  # no study was ever told here: do not create Optuna's tables just to look
    try:
        study = optuna.load_study(study_name=name, storage=get_storage(storage_url))
    except KeyError:
        return {}
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < 3:
        return {}
    out: dict[str, dict[str, float]] = {}
    for i, objective in enumerate(objectives):

        def target(t: optuna.trial.FrozenTrial, i: int = i) -> float:
            return float(t.values[i])

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tiny-sample notes of the evaluator
            try:
                scores = get_param_importances(
                    study,
                    evaluator=FanovaImportanceEvaluator(seed=0),
                    target=target,
                )
            except (ValueError, RuntimeError):  # no shared varying parameter
                continue
        out[objective] = {k: float(v) for k, v in scores.items()}
    return out


def _sqlite_file_exists(url: str) -> bool:
    """False only for a SQLite URL whose file does not exist (other backends: True)."""
    from sqlalchemy.engine import make_url

    u = make_url(url)
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:":
        return True
    from pathlib import Path

    return Path(u.database).is_file()
