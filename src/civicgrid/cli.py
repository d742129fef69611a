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
cockpit_app = typer.Typer(help="The cockpit's pre-aggregated statistics.", no_args_is_help=True)
for sub, name in (
    (db_app, "db"),
    (demo_app, "demo"),
    (users_app, "users"),
    (regions_app, "regions"),
    (audit_app, "audit"),
    (cockpit_app, "cockpit"),
):
    app.add_typer(sub, name=name)


def _database() -> Database:
    settings = get_settings()
    settings.ensure_data_dir()
    return Database(settings.resolved_database_url, settings.db_pool_size)


def _fail(message: str) -> typer.Exit:
    typer.secho(message, fg=typer.colors.RED, err=True)
    return typer.Exit(code=1)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    workers: Annotated[
        int,
        typer.Option(min=1, max=64, help="Web processes (one per core; the worker then runs in one more)."),
    ] = 1,
) -> None:
    """Serve the web UI and API (and, unless CIVICGRID_EMBEDDED_WORKER=false, the worker)."""
    import os

    import uvicorn

    from civicgrid.core.logging import configure
    from civicgrid.main import create_app

    settings = get_settings()
    configure(settings.log_level)
    host = host or settings.host
    port = port or settings.port
    where = {
        "host": host,
        "port": port,
        "log_level": settings.log_level.lower(),
        "access_log": False,  # our own access log leaves out query strings (personal data)
    }
    if workers == 1:
        uvicorn.run(create_app(settings), **where)  # type: ignore[arg-type]
        return
    # Several processes (core/serving.py): they start from the environment, so what they must all
    # share goes there. The background worker runs once, in a process of its own, not in each of
    # them; the default connection pool is divided among the processes (Settings.db_pool_size).
    import multiprocessing

    from civicgrid.core.serving import AddressInUse, serve_processes

    background = None
    if settings.embedded_worker:
        background = multiprocessing.get_context("spawn").Process(target=_work, name="civicgrid-worker")
        background.start()
    os.environ["CIVICGRID_EMBEDDED_WORKER"] = "false"
    os.environ.setdefault("CIVICGRID_DB_POOL_SIZE", str(max(4, settings.db_pool_size // workers)))
    try:
        code = serve_processes(host, port, workers, settings.log_level.lower())
    except AddressInUse as exc:
        raise _fail(str(exc)) from exc
    finally:
        if background is not None:
            background.terminate()  # SIGTERM: the worker finishes its round and stops
            background.join(timeout=30)
    if code:
        raise typer.Exit(code=code)


@app.command()
def worker() -> None:
    """Run the background worker (deadlines, housekeeping) until interrupted."""
    _work()


def _work() -> None:
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
    events: Annotated[
        int, typer.Option(help="Demo events to generate over the last 90 days (0: none).", min=0)
    ] = 3000,
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
            creds_dict = demo.load_demo(
                session, grids=grids, seed=seed, data_dir=settings.data_dir, events=events
            )
        except AppError as exc:
            raise _fail(exc.translated()) from None
    typer.echo(demo.print_credentials(creds_dict))


@demo_app.command("events")
def demo_events(
    count: Annotated[int, typer.Option(help="How many events to generate (up to 5,000,000).")] = 10_000,
    seed: Annotated[int, typer.Option(help="The same seed in the same minute gives the same events.")] = 2021,
    days: Annotated[int, typer.Option(help="Spread the reports over this many past days.")] = 365,
) -> None:
    """Generate many realistic demo events in bulk (needs `civicgrid demo load` first)."""
    from sqlalchemy import text

    from civicgrid.core.errors import AppError
    from civicgrid.demo.events import generate_events

    database = _database()
    try:
        with database.session() as session:
            report = generate_events(session, count=count, seed=seed, days=days)
        # The generator writes below the ORM, so the rollups' flush listener never saw these.
        from civicgrid.events import rollups

        with database.session() as session:
            rollups.rebuild(session)
    except AppError as exc:
        raise _fail(exc.translated()) from None
    if database.engine.dialect.name == "postgresql":
        # Index-only scans of the statistics need the visibility map of the new rows.
        with database.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE event, event_timeline"))
    states = ", ".join(f"{k} {v}" for k, v in sorted(report.by_state.items()))
    typer.echo(
        f"generated {report.count} events ({report.first_number} … {report.last_number}), "
        f"{report.timeline_entries} timeline entries in {report.seconds:.0f} s\n{states}"
    )


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


# ---- events: hotline (12345) import ---------------------------------------------------------
events_app = typer.Typer(help="Events of the four-platform workflow.", no_args_is_help=True)
app.add_typer(events_app, name="events")


@events_app.command("import")
def events_import(
    file: Annotated[
        Path,
        typer.Argument(
            exists=True, dir_okay=False, readable=True, help="CSV (UTF-8 or GBK) or .xlsx export."
        ),
    ],
    as_user: Annotated[
        str,
        typer.Option("--as", help="The importer's username: the events are reported by them, in their area."),
    ],
    mapping: Annotated[
        str | None,
        typer.Option(
            help='JSON object header → field over the default mapping, e.g. {"单号": "external_id"}.'
        ),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Check every row and write nothing.")] = False,
) -> None:
    """Import hotline (12345) tickets as events: every row or none. Bad rows are listed with their
    spreadsheet row number; tickets imported before are skipped."""
    from rich.console import Console
    from rich.progress import Progress, TaskID

    from civicgrid.core.errors import AppError
    from civicgrid.core.i18n import gettext
    from civicgrid.events import hotline

    try:
        custom = json.loads(mapping) if mapping else None
    except json.JSONDecodeError:
        raise _fail(gettext("The column mapping must be a JSON object of header → field.")) from None
    labels = {"validate": gettext("Checking rows"), "commit": gettext("Creating events")}
    with Progress(console=Console(stderr=True)) as bar:
        tasks: dict[str, TaskID] = {}

        def progress(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(labels.get(phase, phase), total=total)
            bar.update(tasks[phase], completed=done, total=total)

        try:
            job, outcome = hotline.import_file(
                _database(),
                path=file,
                username=as_user,
                custom_mapping=custom,
                dry_run=dry_run,
                progress=progress,
            )
        except hotline.ImportRefused as refused:
            bar.stop()
            for line in hotline.report_lines(refused.report):
                typer.echo(line)
            typer.echo(hotline.summary_line(refused.report))
            raise _fail(refused.translated()) from None
        except AppError as exc:
            raise _fail(exc.translated()) from None
    for line in hotline.report_lines(outcome.report):
        typer.echo(line)
    typer.echo(hotline.summary_line(outcome.report))
    if job is None:
        typer.echo(gettext("Dry run: nothing was written."))
        if outcome.report.bad:
            raise typer.Exit(code=1)
        return
    typer.echo(gettext("Import {id}: created {created} events.", id=job.id, created=len(outcome.created)))


# ---- data: ingestion into the data platform ---------------------------------------------------
data_app = typer.Typer(help="The public data platform: catalogue and ingestion.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("ingest")
def data_ingest(
    dataset: Annotated[str, typer.Argument(help="The dataset's name (slug).")],
    file: Annotated[
        Path | None,
        typer.Argument(dir_okay=False, help="CSV (UTF-8 or GBK), .xlsx, JSON or NDJSON; omit with --sql."),
    ] = None,
    as_user: Annotated[
        str,
        typer.Option("--as", help="The data steward (or admin) loading it: the load is audited as theirs."),
    ] = "",
    mode: Annotated[str, typer.Option(help="append or replace.")] = "append",
    fmt: Annotated[
        str | None, typer.Option("--format", help="csv, xlsx, json or ndjson (from the suffix).")
    ] = None,
    sql: Annotated[str | None, typer.Option(help="A SELECT to pull from --url instead of a file.")] = None,
    url: Annotated[str | None, typer.Option(help="SQLAlchemy URL of the database to pull from.")] = None,
    sheet: Annotated[str | None, typer.Option(help="The .xlsx sheet (the first when left out).")] = None,
) -> None:
    """Load a file or a SQL pull as a new version of a dataset, with a progress bar. Rejected
    rows are listed with their line numbers; a failed load leaves the current version as it was."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from civicgrid.accounts import service as accounts
    from civicgrid.core.errors import AppError
    from civicgrid.core.i18n import gettext
    from civicgrid.data import ingest
    from civicgrid.data import service as data_service

    if (file is None) == (sql is None) or (sql is not None and not url):
        raise _fail(gettext("Give either a file or --sql with --url."))
    if file is not None and not file.is_file():
        raise _fail(gettext("The file could not be read: {reason}", reason=str(file)))
    database = _database()
    with database.session() as s:
        user = accounts.get_user_by_username(s, as_user) if as_user else None
        if user is None:
            raise _fail(gettext("Name the loading data steward with --as USERNAME."))
        actor = accounts.actor_for_user(s, user)
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task(gettext("Rows read"), total=None)

        def progress(rows: int, estimate: int) -> None:
            bar.update(task, completed=rows, total=max(estimate, rows) or None)

        try:
            dv = ingest.ingest(
                database,
                actor,
                dataset,
                path=file,
                fmt=fmt,
                mode=mode,
                sql_url=url or "",
                sql_query=sql or "",
                sheet=sheet,
                progress=progress,
            )
        except AppError as exc:
            bar.stop()
            for d in exc.details:
                typer.secho(f"  - {d.get('message')}", fg=typer.colors.RED, err=True)
            raise _fail(exc.translated()) from None
        bar.update(task, completed=dv.progress, total=dv.progress)
    report = json.loads(dv.quality)
    with database.session() as s:
        types = ingest.field_types(data_service.get_dataset(s, dataset))
    for r in report.get("first_rejects", []):
        reasons = "; ".join(ingest.describe_reason(c, types) for c in r["reasons"])
        typer.echo(gettext("Line {line}: {reasons}", line=r["line"], reasons=reasons))
    typer.echo(
        gettext(
            "Version {version} of {dataset} is current: {rows} rows, {rejected} rejected (kept in {path}).",
            version=dv.version,
            dataset=dataset,
            rows=dv.rows,
            rejected=dv.rejected,
            path=f"{dv.path}/rejected",
        )
    )


@cockpit_app.command("rebuild")
def cockpit_rebuild() -> None:
    """Recompute every event rollup from scratch in one transaction (after a bulk load or a repair)."""
    from civicgrid.events import rollups

    database = _database()
    with database.session() as session:
        result = rollups.rebuild(session)
    rows = ", ".join(f"{fact} {n}" for fact, n in result["rows"].items())
    total = sum(result["rows"].values())
    typer.echo(f"event rollups rebuilt in {result['seconds']:.1f} s: {total} rows ({rows})")


if __name__ == "__main__":
    app()
