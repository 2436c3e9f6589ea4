"""The CLI's local runs: validated like the API, recorded in the database of record.

``optforge run`` and ``optforge compare`` build the same ``ExperimentCreate`` spec the API takes
and check it with the same ``plan_experiment`` (caps, lr > 0, names, recipes that cannot train
on the workload), so a mistake is one line with the fix, never a traceback. Unless
``--no-record``, the experiment and its runs are rows of the embedded default's database
(``experiments.origin = "cli"``) and each run is claimed and trained by the worker's own task
body (``workers.tasks.execute_run``), so it appears on the leaderboard and the web pages, and an
identical run that already succeeded is reused instead of retrained.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from records.experiments import ExperimentCreate, Plan

#: CLI flag of each spec field, for error messages that say what to change.
FLAGS = {
    "steps": "--steps",
    "lr": "--lr",
    "seeds": "--seeds",
    "workload": "--workload",
    "queue": "--device",
    "recipes": "--preset/--presets",
}
FIXES = {
    "queue": "this workload is GPU-sized: use --device cuda on a machine with a GPU",
}


def fail(message: str) -> typer.Exit:
    """Print ``error: <one line>`` on stderr; the caller raises the returned Exit (code 2)."""
    line = " ".join(str(message).split())
    typer.echo(f"error: {line}", err=True)
    return typer.Exit(code=2)


def _where(loc: tuple[Any, ...], flags: dict[str, str]) -> str:
    head = str(loc[0]) if loc else ""
    if head == "recipes" and len(loc) > 2 and loc[2] == "recipe":
        return "--recipe " + ".".join(str(p) for p in loc[3:])
    return flags.get(head, ".".join(str(p) for p in loc))


def error_line(exc: Exception, flags: dict[str, str] | None = None) -> str:
    """One line for a pydantic ValidationError or a RecipeError (field as the CLI flag;
    ``flags`` overrides ``FLAGS`` for a command whose flag differs, e.g. run's ``--seed``)."""
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        errors = [{"loc": tuple(e["loc"]), "msg": e["msg"]} for e in exc.errors()]
    else:
        errors = list(getattr(exc, "errors", None) or [{"loc": (), "msg": str(exc)}])
    first = errors[0]
    loc = tuple(first.get("loc", ()))
    msg = str(first["msg"]).removeprefix("Value error, ")
    where = _where(loc, {**FLAGS, **(flags or {})}).strip()
    fix = FIXES.get(str(loc[0]) if loc else "")
    text = f"{where}: {msg}" if where else msg
    return f"{text} ({fix})" if fix else text


def recipe_ref(preset: str | None, recipe_file: Path | None) -> dict[str, Any]:
    """``{"preset": name}`` or ``{"recipe": {...}, "name": stem}`` from ``--recipe FILE``."""
    if recipe_file is None:
        return {"preset": preset or "adamw"}
    try:
        text = recipe_file.read_text()
    except OSError as exc:
        raise fail(f"--recipe {recipe_file}: cannot read it ({exc.strerror})") from None
    data = _parse_recipe_text(recipe_file, text)
    if not isinstance(data, dict):
        raise fail(
            f"--recipe {recipe_file}: expected a mapping (a recipe), got {type(data).__name__}"
        )
    name = data.pop("name", None) or recipe_file.stem
    return {"recipe": data, "name": str(name)[:128]}


def _parse_recipe_text(path: Path, text: str) -> Any:
    import yaml

    if path.suffix == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise fail(
                f"--recipe {path}: invalid JSON at line {exc.lineno}, column {exc.colno}: "
                f"{exc.msg}; fix the file"
            ) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "unreadable"
        raise fail(f"--recipe {path}: invalid YAML{where}: {problem}; fix the file") from None


def check_device(device: str | None) -> str | None:
    """``--device``: cpu, cuda or cuda:N, and CUDA only where this torch has a device."""
    if device is None:
        return None
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise fail(f"--device {device!r}: not a device; use cpu, cuda or cuda:N") from None
    if dev.type not in ("cpu", "cuda"):
        raise fail(f"--device {device!r}: only cpu and cuda are supported")
    if dev.type == "cuda" and not torch.cuda.is_available():
        why = "is a CPU-only build" if torch.version.cuda is None else "sees no CUDA device"
        raise fail(f"--device {device}: this torch ({torch.__version__}) {why}; use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise fail(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) here")
    return str(dev)


def preflight_data(workload: str, data_path: Path | None = None) -> None:
    """Fetch/read the workload's data before anything is recorded (one line if unavailable)."""
    from core.config import get_settings
    from core.workloads import get_workload
    from workers.data import DataUnavailableError, load_data

    spec = get_workload(workload)
    if spec.data not in ("shakespeare", "tokens"):
        return  # generated or bundled: always there
    cache = get_settings().cache_dir
    assert cache is not None
    try:
        load_data(spec, 0, Path(cache), data_path)
    except DataUnavailableError as exc:
        raise fail(str(exc)) from None


def queue_for(device: str | None) -> str:
    """The queue a local run is recorded under: where it actually trains."""
    if device is None:
        import torch

        return "gpu" if torch.cuda.is_available() else "cpu"
    return "gpu" if device.startswith("cuda") else "cpu"


def validated(
    body: dict[str, Any], flags: dict[str, str] | None = None
) -> tuple[ExperimentCreate, Plan]:
    """The API's validator on a CLI spec: (spec, plan) or a one-line error (exit 2)."""
    from pydantic import ValidationError

    from records.experiments import ExperimentCreate, plan_experiment
    from records.recipes import RecipeError

    try:
        spec = ExperimentCreate.model_validate(body)
        return spec, plan_experiment(spec)
    except (ValidationError, RecipeError) as exc:
        raise fail(error_line(exc, flags)) from None


def record(spec: ExperimentCreate, origin: str = "cli") -> tuple[int, list[int], list[int]]:
    """Insert the experiment (committed): (experiment id, all run ids, run ids to train)."""
    from core.db import session_scope
    from migrations.runner import upgrade
    from records.experiments import create_experiment

    upgrade()  # the embedded default's SQLite database: create or migrate it (idempotent)
    with session_scope() as session:
        exp, to_train = create_experiment(session, spec, owner=origin)
        exp.origin = origin
        session.flush()
        all_ids = sorted(r.id for r in exp.runs)
        return exp.id, all_ids, to_train


def train_recorded(
    console: Console, run_id: int, label: str, steps: int, **local: Any
) -> dict[str, Any]:
    """Train one recorded run through the worker's task body with a progress bar."""
    from optforge.cli.train_common import train_with_progress
    from workers.tasks import execute_run

    def work(cb: Any) -> Any:
        return execute_run(run_id, owner="optforge-cli", on_point=cb.on_step, **local)

    train_with_progress(console, label, work, steps)
    out = run_record(run_id)
    reason = str(out.get("failure_reason") or "")
    if out["status"] == "failed" and reason.startswith("DataUnavailableError: "):
        raise fail(reason.splitlines()[0].removeprefix("DataUnavailableError: "))
    return out


def run_record(run_id: int) -> dict[str, Any]:
    """A run row as the CLI prints it: final metrics, env and the curve (dicts)."""
    from core.db import session_scope
    from core.models import Run

    with session_scope() as session:
        run = session.get_one(Run, run_id)
        source = session.get_one(Run, run.reused_from_id) if run.reused_from_id else run
        out = {c.name: getattr(source, c.name) for c in Run.__table__.columns}
        out.update(id=run.id, reused_from_id=run.reused_from_id, experiment_id=run.experiment_id)
        out["env"] = dict(source.env or {})
        out["curve"] = _curve_of(session, source.id)
        return out


def _curve_of(session: Any, run_id: int) -> list[dict[str, Any]]:
    from sqlalchemy import select

    from core.models import RunMetric

    rows = session.scalars(
        select(RunMetric).where(RunMetric.run_id == run_id).order_by(RunMetric.step)
    ).all()
    return [_point(p) for p in rows]


def _point(p: Any) -> dict[str, Any]:
    return {"step": p.step, "tokens": p.tokens, "elapsed_s": p.elapsed_s,
            "train_loss": p.train_loss, "val_loss": p.val_loss, "lr": p.lr}  # fmt: skip


def page_url(path: str) -> str:
    """Where ``optforge up`` shows ``path`` (settings.public_url)."""
    from core.config import get_settings

    return f"{get_settings().public_url.rstrip('/')}{path}"


def scratch_databases(what: str) -> None:
    """``--no-record`` of search/benchmark: ``what``, its runs, Optuna and the broker in a
    throw-away directory.

    Set before any database is opened (and inherited by the ``--parallel`` processes); the
    data cache stays where it is, so nothing is downloaded twice.
    """
    import os
    import tempfile

    from core.config import get_settings
    from core.db import get_engine

    cache = get_settings().cache_dir
    tmp = Path(tempfile.mkdtemp(prefix="optforge-scratch-"))
    os.environ.update(
        OPTFORGE_DATABASE_URL=f"sqlite:///{tmp / 'optforge.db'}",
        OPTFORGE_OPTUNA_STORAGE_URL=f"sqlite:///{tmp / 'optuna.db'}",
        OPTFORGE_BROKER_URL=f"sqla+sqlite:///{tmp / 'broker.db'}",
        OPTFORGE_CACHE_DIR=str(cache),
    )
    get_settings.cache_clear()
    get_engine.cache_clear()
    typer.echo(f"--no-record: {what} kept in {tmp} only", err=True)
