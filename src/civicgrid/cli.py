"""The `civicgrid` command. Each command parses its arguments and calls a service function."""

from __future__ import annotations

import getpass
import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from civicgrid.core.config import get_settings
from civicgrid.core.db import Database

# Plain tracebacks without local variables: locals can hold passwords and personal data.
app = typer.Typer(
    help="CivicGrid: grassroots social governance platform.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    pretty_exceptions_show_locals=False,
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
demo_app = typer.Typer(help="The demo jurisdiction (synthetic below county level).", no_args_is_help=True)
users_app = typer.Typer(help="Users of the unified user system.", no_args_is_help=True)
regions_app = typer.Typer(help="The region and grid tree.", no_args_is_help=True)
audit_app = typer.Typer(help="The hash-chained audit log.", no_args_is_help=True)
for sub, name in (
    (db_app, "db"),
    (demo_app, "demo"),
    (users_app, "users"),
    (regions_app, "regions"),
    (audit_app, "audit"),
):
    app.add_typer(sub, name=name)


def _database() -> Database:
    settings = get_settings()
    settings.ensure_data_dir()
    return Database(settings.resolved_database_url)


def _fail(message: str) -> typer.Exit:
    typer.secho(message, fg=typer.colors.RED, err=True)
    return typer.Exit(code=1)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
) -> None:
    """Serve the web UI and API (and, unless CIVICGRID_EMBEDDED_WORKER=false, the worker)."""
    import uvicorn

    from civicgrid.core.logging import configure
    from civicgrid.main import create_app

    settings = get_settings()
    configure(settings.log_level)
    uvicorn.run(
        create_app(settings),
        host=host or settings.host,
        port=port or settings.port,
        log_level=settings.log_level.lower(),
        access_log=False,  # our own access log leaves out query strings (personal data)
    )


@app.command()
def worker() -> None:
    """Run the background worker (deadlines, housekeeping) until interrupted."""
    import signal
    import threading

    from civicgrid.core.logging import configure
    from civicgrid.worker import run_forever

    configure(get_settings().log_level)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        run_forever(_database(), stop)
    except KeyboardInterrupt:
        stop.set()


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Apply database migrations."""
    from civicgrid.core.migrate import upgrade

    settings = get_settings()
    settings.ensure_data_dir()
    upgrade(settings.resolved_database_url, revision)
    typer.echo("database is up to date")


@demo_app.command("load")
def demo_load(
    grids: Annotated[int, typer.Option(help="How many grids to generate (9 to 50,000).")] = 600,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic geometry and names.")] = 2021,
    if_empty: Annotated[
        bool, typer.Option("--if-empty", help="Do nothing if data is already there.")
    ] = False,
) -> None:
    """Load the demo jurisdiction modelled on Taizhou (台州市) and print the demo logins."""
    from civicgrid.core.errors import AppError
    from civicgrid.demo import service as demo

    database = _database()
    settings = get_settings()
    with database.session() as session:
        if demo.has_data(session):
            if if_empty:
                typer.echo("the database already holds a jurisdiction; demo not loaded")
                creds = settings.data_dir / "demo-credentials.json"
                if creds.exists():
                    typer.echo(demo.print_credentials(json.loads(creds.read_text())))
                return
            raise _fail("The database already holds a jurisdiction; the demo loads only into an empty one.")
        try:
            creds_dict = demo.load_demo(session, grids=grids, seed=seed, data_dir=settings.data_dir)
        except AppError as exc:
            raise _fail(exc.translated()) from None
    typer.echo(demo.print_credentials(creds_dict))


@users_app.command("create")
def users_create(
    username: Annotated[str, typer.Option()],
    display_name: Annotated[str, typer.Option()],
    org: Annotated[str, typer.Option(help="Code of the organisation the user acts for.")],
    role: Annotated[str, typer.Option(help="admin, leader, dispatcher, handler, grid_worker, resident, ...")],
    phone: Annotated[str | None, typer.Option()] = None,
    password: Annotated[str | None, typer.Option(help="Read from a prompt when left out.")] = None,
) -> None:
    """Create a user (as the system) with one organisation and role."""
    from civicgrid.accounts import service as accounts
    from civicgrid.accounts.permissions import Role
    from civicgrid.core.auth import SYSTEM
    from civicgrid.core.errors import AppError

    try:
        role_value = Role(role)
    except ValueError:
        raise _fail(f"Unknown role {role!r}; one of: {', '.join(r.value for r in Role)}") from None
    pw = password or getpass.getpass("Password: ")
    try:
        with _database().session() as session:
            user = accounts.create_user(
                session,
                SYSTEM,
                username=username,
                display_name=display_name,
                password=pw,
                memberships=[(org, role_value)],
                phone=phone,
            )
            typer.echo(f"created user {user.username} (id {user.id})")
    except AppError as exc:
        raise _fail(exc.translated()) from None


@regions_app.command("import")
def regions_import(file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)]) -> None:
    """Import a GeoJSON FeatureCollection (properties: code, name, level, parent_code)."""
    from civicgrid.core.auth import SYSTEM
    from civicgrid.core.errors import AppError
    from civicgrid.regions import service as regions

    try:
        collection = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _fail(f"{file}: not a UTF-8 JSON file ({exc})") from None
    try:
        with _database().session() as session:
            report = regions.import_features(session, SYSTEM, collection)
    except AppError as exc:
        typer.secho(exc.translated(), fg=typer.colors.RED, err=True)
        for d in exc.details:
            typer.secho(f"  - {d.get('message')}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=1) from None
    typer.echo(f"imported: {report}")


@regions_app.command("export")
def regions_export(
    file: Annotated[Path | None, typer.Argument(help="Output file; standard output when left out.")] = None,
    root: Annotated[str | None, typer.Option(help="Code of the subtree's root.")] = None,
) -> None:
    """Export the region tree as a GeoJSON FeatureCollection."""
    from civicgrid.core.auth import SYSTEM
    from civicgrid.regions import service as regions

    with _database().session() as session:
        collection = regions.export_features(session, SYSTEM, root)
    text = json.dumps(collection, ensure_ascii=False)
    if file is None:
        sys.stdout.write(text + "\n")
    else:
        file.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {len(collection['features'])} features to {file}")


@audit_app.command("verify")
def audit_verify() -> None:
    """Check the audit chain; exits 1 and names every record that does not match."""
    from civicgrid.core import audit

    with _database().session() as session:
        breaks = audit.verify(session)
    if breaks:
        for b in breaks:
            typer.secho(f"record {b.record_id}: {b.reason} does not match", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=1)
    typer.echo("audit chain intact")


if __name__ == "__main__":
    app()
