"""CLI commands: api (serve, keys, submit)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

TERMINAL = {"succeeded", "failed", "diverged", "cancelled", "pruned"}

keys_app = typer.Typer(help="API keys for write endpoints (stored hashed).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add this group's commands to the root app."""
    app.command()(serve)
    app.command()(submit)
    app.add_typer(keys_app, name="keys")


def _migrate_if_embedded() -> None:
    from core.config import get_settings

    settings = get_settings()
    if settings.database_url.startswith("sqlite"):
        from migrations.runner import upgrade

        settings.ensure_dirs()
        upgrade()


def serve(
    host: Annotated[str | None, typer.Option(help="bind address (default: settings)")] = None,
    port: Annotated[int | None, typer.Option(help="port (default: settings)")] = None,
    migrate: Annotated[
        bool, typer.Option(help="apply migrations first on SQLite (the embedded default)")
    ] = True,
) -> None:
    """Run the HTTP API (uvicorn, factory api.main:create_app)."""
    import uvicorn

    from core.config import get_settings

    settings = get_settings()
    if migrate:
        _migrate_if_embedded()
    host = host or settings.api_host
    port = port or settings.api_port
    typer.echo(f"optforge API on http://{host}:{port}/ (docs at /docs)")
    uvicorn.run("api.main:create_app", factory=True, host=host, port=port, log_level="info")


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="who the key belongs to")],
    admin: Annotated[
        bool, typer.Option("--admin", help="may also cancel runs/studies of other keys")
    ] = False,
) -> None:
    """Create a key and print it once (only its sha256 is stored)."""
    from core.db import session_scope
    from records.api_keys import create_api_key

    _migrate_if_embedded()
    try:
        with session_scope() as session:
            key = create_api_key(session, name, admin=admin)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(key)
    role = "admin key" if admin else "API key"
    typer.echo(f"({role} for {name!r}; store it now: it is not shown again)", err=True)


@keys_app.command("list")
def keys_list() -> None:
    """List keys (name, prefix, created, revoked); never the keys themselves."""
    from sqlalchemy import select

    from core.db import session_scope
    from core.models import ApiKey

    with session_scope() as session:
        for k in session.scalars(select(ApiKey).order_by(ApiKey.id)):
            state = f"revoked {k.revoked_at:%Y-%m-%d}" if k.revoked_at else "active"
            role = "admin" if k.is_admin else "user"
            typer.echo(f"{k.name}\t{k.prefix}…\t{k.created_at:%Y-%m-%d %H:%M}\t{role}\t{state}")


@keys_app.command("revoke")
def keys_revoke(name: Annotated[str, typer.Option(help="key name")]) -> None:
    """Revoke a key (requests with it then get 403)."""
    from sqlalchemy import select

    from core.db import session_scope
    from core.models import ApiKey, utcnow

    with session_scope() as session:
        key = session.scalars(select(ApiKey).where(ApiKey.name == name)).first()
        if key is None:
            typer.echo(f"error: no key named {name!r}", err=True)
            raise typer.Exit(2)
        key.revoked_at = utcnow()
    typer.echo(f"revoked {name!r}")


def _load_spec(path: Path) -> dict[str, Any]:
    import yaml

    try:  # JSON is YAML too
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise typer.BadParameter(f"{path} is not valid YAML/JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise typer.BadParameter(f"{path} must hold a mapping (an experiment spec)")
    return data


def _fail(resp: Any) -> None:
    try:
        body = resp.json()
    except ValueError:
        body = {"detail": resp.text}
    typer.echo(f"error {resp.status_code}: {body.get('detail', body)}", err=True)
    for err in body.get("errors") or []:
        valid = f" (valid: {err['valid']})" if err.get("valid") else ""
        typer.echo(f"  {err.get('field')}: {err.get('msg')}{valid}", err=True)
    raise typer.Exit(1)


def submit(
    spec: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="YAML/JSON spec")],
    wait: Annotated[bool, typer.Option(help="poll until every run is terminal")] = False,
    api: Annotated[str | None, typer.Option(help="API base URL (default: settings)")] = None,
    key: Annotated[
        str | None, typer.Option(envvar="OPTFORGE_API_KEY", help="API key for writes")
    ] = None,
    idempotency_key: Annotated[str | None, typer.Option(help="Idempotency-Key header")] = None,
    poll_s: Annotated[float, typer.Option(help="seconds between polls")] = 2.0,
) -> None:
    """POST an experiment spec; with --wait show progress, then its leaderboard rows."""
    import httpx

    from core.config import get_settings

    base = (api or get_settings().public_url).rstrip("/")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    if idempotency_key:
        headers["Idempotency-Key"] = idempotency_key
    body = _load_spec(spec)
    try:
        with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
            _submit(client, base, body, wait, poll_s)
    except httpx.HTTPError as exc:
        typer.echo(f"error: cannot reach the API at {base}: {exc}", err=True)
        raise typer.Exit(1) from exc


def _submit(client: Any, base: str, body: dict[str, Any], wait: bool, poll_s: float) -> None:
    resp = client.post("/v1/experiments", json=body)
    if resp.status_code >= 400:
        _fail(resp)
    exp = resp.json()
    typer.echo(f"experiment {exp['id']}: {len(exp['runs'])} runs ({base}/experiments/{exp['id']})")
    if wait:
        exp = _wait(client, exp, poll_s)
        _print_board(client, exp)


def _wait(client: Any, exp: dict[str, Any], poll_s: float) -> dict[str, Any]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    total = len(exp["runs"])
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn()) as bar:
        task = bar.add_task(f"experiment {exp['id']}", total=total)
        while True:
            done = sum(1 for r in exp["runs"] if r["status"] in TERMINAL)
            bar.update(task, completed=done)
            if done >= total:
                return exp
            time.sleep(poll_s)
            resp = client.get(f"/v1/experiments/{exp['id']}")
            if resp.status_code >= 400:
                _fail(resp)
            exp = resp.json()


def _print_board(client: Any, exp: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    counts = ", ".join(f"{n} {s}" for s, n in sorted(exp["counts"].items()))
    typer.echo(f"runs: {counts}")
    for r in exp["runs"]:
        if r["status"] != "succeeded" and r.get("failure_reason"):
            typer.echo(f"  run {r['id']} {r['status']}: {r['failure_reason']}")
    mine = {r["recipe_id"] for r in exp["runs"]}
    pairs = sorted({(r["workload"], r["steps"]) for r in exp["runs"]})
    for workload, steps in pairs:
        resp = client.get(
            "/v1/leaderboard", params={"workload": workload, "steps": steps, "limit": 500}
        )
        if resp.status_code >= 400:
            _fail(resp)
        table = Table(title=f"{workload} · {steps} steps")
        for col in (
            "#",
            "recipe",
            "best lr",
            "val loss",
            "state B/param",
            "tok/s",
            "runs",
            "pareto",
        ):
            table.add_column(col)
        for rank, row in enumerate(resp.json()["rows"], 1):
            if row["recipe_id"] in mine:
                table.add_row(*_cells(rank, row))
        Console().print(table)


def _cells(rank: int, row: dict[str, Any]) -> list[str]:
    def num(v: Any, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    return [
        str(rank),
        row["name"],
        num(row["best_lr"], ".3g"),
        num(row["val_loss_mean"], ".4f")
        + (f" ± {num(row['val_loss_std'], '.4f')}" if row["n_runs"] > 1 else ""),  # no "± 0"
        num(row["state_bytes_per_param"], ".2f"),
        num(row["tokens_per_s"], ".0f"),
        str(row["n_runs"]),
        "★" if row["pareto"] else "",
    ]
