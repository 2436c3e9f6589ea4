"""The ``optforge`` command line (Typer).

Each command group lives in its own module with a ``register(app)`` function; heavy imports
(torch, celery, optuna) happen inside the commands so ``optforge --help`` stays fast.
"""

from __future__ import annotations

import typer

from optforge.cli import api_cmds, bench_cmds, demo_cmds, search_cmds, service_cmds, train_cmds


def _flags_show_no_type() -> None:
    """Typer 0.29 prints a type after every flag in help (``--json <bool>``, even ``--help``);
    a flag takes no value, so its type column stays empty (options with values keep theirs)."""
    from typer.core import TyperOption

    shown = TyperOption.display_type_rich

    def display_type_rich(self: TyperOption, ctx: typer.Context) -> str | None:
        return None if self.is_flag else shown(self, ctx)

    setattr(TyperOption, "display_type_rich", display_type_rich)  # noqa: B010


_flags_show_no_type()

app = typer.Typer(
    name="optforge",
    help="Design and search memory-efficient optimizers for language-model training.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


@app.callback()
def _root() -> None:
    """optforge: optimizer recipes, training runs, searches and the service around them."""


@app.command()
def version() -> None:
    """Print the versions of optforge, torch, optuna and celery."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    import optforge

    typer.echo(f"optforge {optforge.__version__}")
    for dist in ("torch", "optuna", "celery", "fastapi", "sqlalchemy"):
        try:
            typer.echo(f"{dist} {dist_version(dist)}")
        except PackageNotFoundError:
            typer.echo(f"{dist} (not installed)")


train_cmds.register(app)
demo_cmds.register(app)
service_cmds.register(app)
search_cmds.register(app)
api_cmds.register(app)
bench_cmds.register(app)


def main() -> None:
    app()
