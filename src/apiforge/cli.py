"""The `apiforge` command line."""

import typer

from apiforge.core.settings import Settings

app = typer.Typer(help="apiforge: a self-hosted open API platform.", no_args_is_help=True)
db = typer.Typer(help="Database commands.", no_args_is_help=True)
app.add_typer(db, name="db")


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply every migration (creates the embedded SQLite database on first run)."""
    from apiforge.migrate import upgrade

    upgrade(Settings())
    typer.echo("database is up to date")


def main() -> None:
    app()
