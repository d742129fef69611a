"""Ingestion (数据归集): files and database pulls into a new, atomically published data version.

A load is one DataVersion: `start_load` registers it (state loading, committed so its
progress is visible), `run_load` stages the input as something the engine reads (GBK CSV
transcoded to UTF-8, Excel and SQL pulls written as NDJSON with their line numbers), lets the
engine check every rule and write Parquet, then publishes the folder and switches the
dataset's pointer in one transaction. Any failure — unreadable input, a missing column, a
blocking rule broken, no valid row, a disk error — marks the version failed and leaves the
previous one current. Rejected rows are kept in the version's rejected/ folder, each with
its line number and reasons.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import date, datetime
from datetime import time as dtime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from civicgrid.core import audit
from civicgrid.core.auth import Actor
from civicgrid.core.db import Database, utcnow
from civicgrid.core.errors import AppError, Conflict, Invalid
from civicgrid.core.i18n import gettext
from civicgrid.core.masking import mask_id_number, mask_name, mask_phone
from civicgrid.data import service
from civicgrid.data.engine import ColumnSpec, Engine, LoadResult, Rules, Source
from civicgrid.data.models import (
    Dataset,
    DatasetField,
    DatasetState,
    DataVersion,
    FieldType,
    Sensitivity,
    VersionState,
)

log = logging.getLogger("civicgrid.data.ingest")

FORMATS = ("csv", "xlsx", "json", "ndjson", "sql")
MODES = ("append", "replace")
SAMPLE = 1 << 20
LINE_KEY = "_line"
BATCH = 10_000

ProgressFn = Callable[[int, int], None]  # (rows read, estimated total; 0 when unknown)


def N_(message: str) -> str:
    """Marks a msgid for extraction; it is translated where it is shown."""
    return message


#: Field types as a person reads them (the catalogue pages and reject reasons).
TYPE_NAMES = {
    "string": N_("Text (string)"),
    "integer": N_("Integer"),
    "float": N_("Decimal"),
    "boolean": N_("Yes/no"),
    "date": N_("Date"),
    "datetime": N_("Date and time"),
}

# Reason codes ("field:rule") as a person reads them.
RULE_MESSAGES = {
    "type": N_("{field}: not a valid {type}"),
    "not_null": N_("{field}: empty"),
    "regex": N_("{field}: does not match the pattern"),
    "min": N_("{field}: below the minimum"),
    "max": N_("{field}: above the maximum"),
    "date": N_("{field}: not a date in the expected format"),
    "id_number": N_("{field}: not a valid ID number"),
    "mobile": N_("{field}: not a mobile number"),
    "malformed": N_("the line does not have the file's columns"),
}


def describe_reason(code: str, types: Mapping[str, str] | None = None) -> str:
    """A reason code ("id_number:id_number") in the reader's language; `types`: the dataset's
    field types (`field_types`), which "not a valid …" names."""
    field, _, rule = code.partition(":")
    template = RULE_MESSAGES.get(rule)
    if template is None:
        return code
    kind = (types or {}).get(field, "")
    return gettext(template, field=field, type=gettext(TYPE_NAMES[kind]) if kind in TYPE_NAMES else kind)


def field_types(ds: Dataset) -> dict[str, str]:
    return {f.name: str(f.type) for f in ds.fields}


# ---- format detection and staging ----------------------------------------------------------


def detect_format(path: Path, declared: str | None = None) -> str:
    if declared:
        if declared not in FORMATS or declared == "sql":
            raise Invalid("Unknown file format {format}: use csv, xlsx, json or ndjson.", format=declared)
        return declared
    suffix = path.suffix.lower()
    if suffix in (".csv", ".txt", ".tsv"):
        return "csv"
    if suffix in (".xlsx", ".xlsm"):
        return "xlsx"
    if suffix in (".ndjson", ".jsonl"):
        return "ndjson"
    if suffix == ".json":
        with path.open("rb") as fp:
            head = fp.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
        return "json" if head.startswith(b"[") else "ndjson"
    raise Invalid("Unknown file format {format}: use csv, xlsx, json or ndjson.", format=suffix or "-")


def detect_encoding(path: Path) -> str:
    """ "utf-8" or "gb18030" (a superset of GBK): samples the head and, when it is plain ASCII,
    a few more places, since Chinese text may start deep into a file."""
    size = path.stat().st_size
    offsets = [0]
    if size > SAMPLE:
        offsets += [size * k // 5 for k in (1, 2, 3, 4)]
    with path.open("rb") as fp:
        for off in offsets:
            fp.seek(off)
            chunk = fp.read(SAMPLE)
            if off:
                nl = chunk.find(b"\n")  # start on a line boundary, away from a split character
                chunk = chunk[nl + 1 :] if nl >= 0 else b""
            if chunk.isascii():
                continue
            # Cut at the last newline so a character split by the sample does not count.
            cut = chunk.rfind(b"\n")
            body = chunk[: cut + 1] if cut > 0 and len(chunk) == SAMPLE else chunk
            try:
                body.decode("utf-8")
            except UnicodeDecodeError:
                try:
                    body.decode("gb18030")
                    return "gb18030"
                except UnicodeDecodeError:
                    raise Invalid(
                        "The file is neither UTF-8 nor GBK text.", error_code="bad_encoding"
                    ) from None
            return "utf-8"
    return "utf-8"


def transcode(path: Path, target: Path, encoding: str, progress: Callable[[int], None] | None = None) -> None:
    """Stream a GBK/GB18030 file into UTF-8 (DuckDB reads UTF-8 only without extensions)."""
    done = 0
    try:
        with (
            path.open("r", encoding=encoding, newline="") as src,
            target.open("w", encoding="utf-8", newline="") as out,
        ):
            while chunk := src.read(1 << 20):
                out.write(chunk)
                done += chunk.count("\n")
                if progress:
                    progress(done)
    except UnicodeDecodeError as exc:
        raise Invalid("The file is neither UTF-8 nor GBK text.", error_code="bad_encoding") from exc


def _cell(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat(sep=" ") if value.time() != dtime(0) else value.date().isoformat()
    if isinstance(value, date | dtime):
        return value.isoformat()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    text = str(value)
    return text if text.strip() else None


def _write_ndjson(
    target: Path,
    header: Sequence[str],
    rows: Iterator[tuple[int, Sequence[Any]]],
    progress: Callable[[int], None] | None,
) -> int:
    n = 0
    with target.open("w", encoding="utf-8") as out:
        for line, values in rows:
            record: dict[str, Any] = {LINE_KEY: line}
            for key, value in zip(header, values, strict=False):
                record[key] = _cell(value)
            out.write(json.dumps(record, ensure_ascii=False))
            out.write("\n")
            n += 1
            if progress and n % BATCH == 0:
                progress(n)
    if progress:
        progress(n)
    return n


def stage_xlsx(
    path: Path, target: Path, progress: Callable[[int], None] | None = None, sheet: str | None = None
) -> list[str]:
    """The first (or named) sheet as NDJSON: row 1 is the header, `_line` the sheet's row."""
    import zipfile

    from openpyxl import load_workbook

    try:
        wb = load_workbook(path, read_only=True, data_only=True)
    except (OSError, zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise Invalid("The file could not be read: {reason}", reason="not an .xlsx workbook") from exc
    try:
        ws = wb[sheet] if sheet else wb.worksheets[0]
        rows = ws.iter_rows(values_only=True)
        first = next(rows, None)
        if first is None:
            raise Invalid("The file is empty.")
        header = [str(h).strip() if h is not None else f"column_{i + 1}" for i, h in enumerate(first)]
        while header and header[-1].startswith("column_"):
            header.pop()  # trailing empty header cells of a formatted sheet

        def body() -> Iterator[tuple[int, Sequence[Any]]]:
            for i, row in enumerate(rows, start=2):
                if any(v is not None and str(v).strip() for v in row):
                    yield i, row

        _write_ndjson(target, header, body(), progress)
        return header
    except KeyError:
        raise Invalid("The workbook has no sheet named {sheet}.", sheet=sheet or "") from None
    finally:
        wb.close()


def stage_sql(url: str, query: str, target: Path, progress: Callable[[int], None] | None = None) -> list[str]:
    """A SELECT against another database, streamed in batches into NDJSON (`_line`: row number)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import SQLAlchemyError

    if not re.match(r"^\s*(select|with)\b", query, re.IGNORECASE) or ";" in query.strip().rstrip(";"):
        raise Invalid("A pull is a single SELECT statement.", error_code="bad_sql")
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    try:
        eng = create_engine(url)
    except (SQLAlchemyError, ValueError, ImportError) as exc:
        raise Invalid("The database URL is not usable: {reason}", reason=type(exc).__name__) from exc
    try:
        with eng.connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=BATCH).execute(
                text(query.strip().rstrip(";"))
            )
            header = [str(k) for k in result.keys()]  # noqa: SIM118 (a Result, not a dict)

            def body() -> Iterator[tuple[int, Sequence[Any]]]:
                n = 0
                while batch := result.fetchmany(BATCH):
                    for row in batch:
                        n += 1
                        yield n, tuple(row)

            _write_ndjson(target, header, body(), progress)
            return header
    except SQLAlchemyError as exc:
        orig = getattr(exc, "orig", None)
        reason = (str(orig or exc).splitlines() or [type(exc).__name__])[0][:300]
        raise Invalid("The pull failed: {reason}", reason=reason, error_code="pull_failed") from exc
    finally:
        eng.dispose()


# ---- the load ----------------------------------------------------------------------------


class LoadFailed(Invalid):
    """A load that ran and failed; its DataVersion is marked failed."""


def _column_specs(ds: Dataset, header: Sequence[str]) -> list[ColumnSpec]:
    """Registered fields → engine columns; a field is found by its name or its title."""
    specs: list[ColumnSpec] = []
    for f in ds.fields:
        rules = service.rules_of(f)
        source = f.name if f.name in header else (f.title if f.title and f.title in header else f.name)
        fmt = str(rules.get("date") or "")
        specs.append(
            ColumnSpec(
                name=f.name,
                type=str(f.type),
                source=source,
                date_format=fmt if f.type in (FieldType.date, FieldType.datetime) else "",
                rules=Rules(
                    not_null=bool(rules.get("not_null")),
                    regex=str(rules.get("regex") or ""),
                    min=rules.get("min"),
                    max=rules.get("max"),
                    date_format=fmt if f.type == FieldType.string else "",
                    id_number=bool(rules.get("id_number")),
                    mobile=bool(rules.get("mobile")),
                ),
            )
        )
    return specs


def cluster_fields(ds: Dataset) -> list[str]:
    """Fields a load sorts its rows by, so filtered reads on them skip most of the file:
    those whose rules say `"cluster": true`, in field order (none by default)."""
    return [f.name for f in ds.fields if service.rules_of(f).get("cluster")]


def inferred_fields(columns: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
    """Fields for a dataset registered without any: the sniffed columns, names made identifiers."""
    out: list[dict[str, Any]] = []
    used: set[str] = set()
    for i, (source, ftype) in enumerate(columns, start=1):
        name = re.sub(r"[^a-z0-9_]+", "_", source.strip().lower()).strip("_")
        if not name or not name[0].isalpha():
            name = f"field_{i}"
        name = name[:60]
        while name in used:
            name = f"{name}_{i}"
        used.add(name)
        out.append({"name": name, "title": source if source != name else "", "type": ftype})
    return out


def _mask_for_report(f: DatasetField | None, value: Any) -> Any:
    if f is None or f.sensitivity == Sensitivity.none or value in (None, ""):
        return value
    s = str(value)
    if f.mask == "id_number":
        return mask_id_number(s)
    if f.mask == "phone":
        return mask_phone(s)
    if f.mask == "name":
        return mask_name(s)
    return s[:1] + "*" * (len(s) - 1)


def quality_report(ds: Dataset, result: LoadResult) -> dict[str, Any]:
    """The stored report: counts per field and reason, and the first rejects with personal
    values masked (the raw rows stay in the version's rejected/ folder)."""
    by_name = {f.name: f for f in ds.fields}
    first = [
        {
            "line": r["line"],
            "reasons": r["reasons"],
            "values": {k: _mask_for_report(by_name.get(k), v) for k, v in r["values"].items() if k != "_raw"},
        }
        for r in result.first_rejects
    ]
    return {
        "read": result.read,
        "rows": result.rows,
        "rejected": result.rejected,
        "fields": result.quality,
        "reasons": result.reasons,
        "first_rejects": first,
        "source_columns": result.source_columns,
        "millis": result.millis,
    }


def _error_json(exc: AppError) -> str:
    return json.dumps(
        {
            "message": exc.message,
            "params": {k: str(v) for k, v in exc.params.items()},
            "details": exc.details,
        },
        ensure_ascii=False,
    )


def error_text(dv: DataVersion) -> str:
    """The failure of a load in the reader's language."""
    if not dv.error:
        return ""
    try:
        err = json.loads(dv.error)
        message = str(err["message"])
        return gettext(message, **err.get("params", {}))
    except (ValueError, KeyError, TypeError):
        return dv.error


def start_load(session: Session, actor: Actor, name: str, *, mode: str, source: str) -> DataVersion:
    """Register a load of dataset `name` (state loading); the caller commits."""
    if mode not in MODES:
        raise Invalid("The load mode is append or replace.")
    ds = service.get_managed(session, actor, name)
    if ds.state != "active":
        raise Conflict("Dataset {name} has been destroyed and cannot change.", name=name)
    last = session.scalar(
        select(DataVersion.version)
        .where(DataVersion.dataset_id == ds.id)
        .order_by(DataVersion.version.desc())
        .limit(1)
    )
    dv = DataVersion(
        dataset_id=ds.id,
        version=(last or 0) + 1,
        mode=mode,
        state=VersionState.loading,
        source=source[:300],
        created_by=actor.username,
    )
    session.add(dv)
    session.flush()
    return dv


class _Progress:
    """Writes DataVersion.progress at most twice a second, in its own short transactions."""

    def __init__(self, db: Database, version_id: int, report: ProgressFn | None) -> None:
        self.db, self.version_id, self.report = db, version_id, report
        self.estimate = 0
        self._last = 0.0
        self._lock = threading.Lock()

    def __call__(self, rows: int, force: bool = False) -> None:
        if self.report:
            self.report(rows, self.estimate)
        now = time.monotonic()
        with self._lock:
            if not force and now - self._last < 0.5:
                return
            self._last = now
        # Progress is advisory: never fail a load for it.
        with contextlib.suppress(Exception), self.db.session() as s:
            dv = s.get(DataVersion, self.version_id)
            if dv is not None and dv.state == VersionState.loading:
                dv.progress = rows


def run_load(
    db: Database,
    actor: Actor,
    version_id: int,
    *,
    path: Path | None = None,
    fmt: str | None = None,
    sql_url: str = "",
    sql_query: str = "",
    sheet: str | None = None,
    progress: ProgressFn | None = None,
    engine: Engine | None = None,
    cluster_by: Sequence[str] | None = None,
) -> DataVersion:
    """Run a registered load to the end: ready and current, or failed (and raised) with the
    previous version untouched. `cluster_by`: fields to sort the rows by (default: the
    fields whose rules say `"cluster": true`; see `cluster_fields`)."""
    eng = engine or service.engine()
    tracker = _Progress(db, version_id, progress)
    with db.session() as s:
        dv = s.get(DataVersion, version_id)
        if dv is None or dv.state != VersionState.loading:
            raise Conflict("This load is not waiting to run.")
        ds = s.get(Dataset, dv.dataset_id)
        assert ds is not None
        name, version, mode = ds.name, dv.version, dv.mode
    staging = eng.staging_dir(name)
    published_path = ""
    try:
        src = _stage(eng, staging, path, fmt, sql_url, sql_query, sheet, tracker)
        with db.session() as s:
            ds = service.get_dataset(s, name)
            if not ds.fields:
                sniffed = eng.sniff(src)
                service.update_dataset(s, actor, name, fields=inferred_fields(sniffed.columns))
            header = [c for c, _t in eng.sniff(src).columns]
            specs = _column_specs(ds, header)
            blocking = [f.name for f in ds.fields if service.rules_of(f).get("blocking")]
            base = service.current_version(s, ds)
            base_id = base.id if base else None
            previous = eng.version_files(base.path) if base and mode == "append" else []
            types = field_types(ds)
            cluster = list(cluster_by) if cluster_by is not None else cluster_fields(ds)
        tracker.estimate = src.estimated_rows
        result = eng.load(src, specs, staging, progress=lambda n: tracker(n), cluster_by=cluster)
        _check_result(result, blocking, types)
        with db.session() as s:
            _check_active(s, name)  # cheap early exit; the commit below checks again, locked
        published = eng.publish(staging, name, version, previous)
        published_path = published.path
        with db.session() as s:
            # Locked, so a destruction approved meanwhile either committed first (and is seen
            # here) or waits for this commit and then destroys this version with the rest.
            ds = _check_active(s, name, lock=True)
            if ds.current_version_id != base_id:
                raise Conflict("Another load of {name} finished first; run this one again.", name=name)
            dv = s.get(DataVersion, version_id)
            assert dv is not None
            report = quality_report(ds, result)
            dv.path = published.path
            # An append version holds the earlier rows too; the report counts this load's.
            dv.rows = eng.count(published.files) if previous else result.rows
            dv.rejected = result.rejected
            dv.bytes = published.bytes
            dv.sha256 = published.sha256
            dv.quality = json.dumps(report, ensure_ascii=False, default=str)
            dv.progress = result.read
            dv.state = VersionState.ready
            dv.finished_at = utcnow()
            if base_id is not None:
                old = s.get(DataVersion, base_id)
                if old is not None and old.state == VersionState.ready:
                    old.state = VersionState.superseded
            ds.current_version_id = dv.id
            s.flush()
            audit.record(
                s,
                actor,
                "dataset.load",
                "dataset",
                name,
                extra={
                    "version": version,
                    "mode": mode,
                    "source": dv.source,
                    "rows": dv.rows,
                    "rejected": dv.rejected,
                    "sha256": dv.sha256,
                },
            )
        tracker(result.read, force=True)
        with db.session() as s:
            out = s.get(DataVersion, version_id)
            assert out is not None
            s.expunge(out)
            return out
    except BaseException as exc:
        eng.discard(staging)
        # Renamed into place but not committed: the pointer never moved; remove the orphan.
        eng.remove_version(published_path or eng.version_path(name, version))
        if isinstance(exc, Exception) and _destroyed(db, name):
            # Destroyed while loading: say so (whatever broke first, e.g. the staging folder
            # removed under the load), and leave no empty folder behind the certificate.
            with contextlib.suppress(OSError):
                eng.dataset_dir(name).rmdir()
            gone = Conflict("Dataset {name} has been destroyed and cannot change.", name=name)
            _mark_failed(db, actor, version_id, name, gone)
            raise gone from exc
        err = (
            exc
            if isinstance(exc, AppError)
            else Invalid(
                "The load failed: {reason}",
                reason=type(exc).__name__ + (f": {exc}" if isinstance(exc, OSError) else ""),
            )
        )
        _mark_failed(db, actor, version_id, name, err)
        if isinstance(exc, AppError) and not isinstance(exc, Conflict):
            raise LoadFailed(exc.message, error_code=exc.code, details=exc.details, **exc.params) from exc
        if isinstance(exc, Exception) and not isinstance(exc, AppError):
            log.exception("load %s v%s failed", name, version)
            raise LoadFailed(err.message, error_code="load_failed", **err.params) from exc
        raise


def _check_active(session: Session, name: str, *, lock: bool = False) -> Dataset:
    """The dataset, still active (a destruction approved during the load → Conflict); `lock`
    holds its row until the commit (PostgreSQL; SQLite serialises writers anyway)."""
    stmt = select(Dataset).where(Dataset.name == name)
    ds = session.scalar(stmt.with_for_update() if lock else stmt)
    if ds is None or ds.state != DatasetState.active:
        raise Conflict("Dataset {name} has been destroyed and cannot change.", name=name)
    return ds


def _destroyed(db: Database, name: str) -> bool:
    with contextlib.suppress(Exception), db.session() as s:
        state = s.scalar(select(Dataset.state).where(Dataset.name == name))
        return state is not None and state != DatasetState.active
    return False


def _check_result(result: LoadResult, blocking: Sequence[str], types: Mapping[str, str]) -> None:
    details = [
        {
            "message": gettext(
                "Line {line}: {reasons}",
                line=r["line"],
                reasons="; ".join(describe_reason(c, types) for c in r["reasons"]),
            ),
            "line": r["line"],
        }
        for r in result.first_rejects[:10]
    ]
    broken = [f for f in blocking if result.quality.get(f, {}).get("invalid")]
    if broken:
        raise Invalid(
            "Field {fields} has values that break a blocking rule, so nothing was loaded. "
            "The first bad rows are listed.",
            fields=", ".join(broken),
            details=details,
            error_code="blocking_rule",
        )
    if result.rows == 0:
        raise Invalid(
            "No row of the file passed the checks ({rejected} rejected), so nothing was loaded.",
            rejected=result.rejected,
            details=details,
            error_code="no_valid_rows",
        )


def _mark_failed(db: Database, actor: Actor, version_id: int, name: str, err: AppError) -> None:
    with contextlib.suppress(Exception), db.session() as s:
        dv = s.get(DataVersion, version_id)
        if dv is None:
            return
        dv.state = VersionState.failed
        dv.error = _error_json(err)
        dv.finished_at = utcnow()
        audit.record(
            s,
            actor,
            "dataset.load_failed",
            "dataset",
            name,
            extra={"version": dv.version, "error": err.message},
        )


def _stage(
    eng: Engine,
    staging: Path,
    path: Path | None,
    fmt: str | None,
    sql_url: str,
    sql_query: str,
    sheet: str | None,
    progress: _Progress,
) -> Source:
    """The input as a Source the engine reads."""
    if sql_url:
        target = staging / "source.ndjson"
        stage_sql(sql_url, sql_query, target, progress)
        return Source(target, "ndjson", line_column=LINE_KEY)
    if path is None or not path.is_file():
        raise Invalid("The file could not be read: {reason}", reason="missing")
    if path.stat().st_size == 0:
        raise Invalid("The file is empty.")
    kind = detect_format(path, fmt)
    if kind == "xlsx":
        target = staging / "source.ndjson"
        stage_xlsx(path, target, progress, sheet)
        return Source(target, "ndjson", line_column=LINE_KEY)
    if kind == "csv":
        if detect_encoding(path) != "utf-8":
            target = staging / "source.csv"
            transcode(path, target, "gb18030", progress)
            return Source(target, "csv")
        return Source(path, "csv")
    return Source(path, "json" if kind == "json" else "ndjson")


def ingest(
    db: Database,
    actor: Actor,
    name: str,
    *,
    path: Path | None = None,
    fmt: str | None = None,
    mode: str = "append",
    sql_url: str = "",
    sql_query: str = "",
    sheet: str | None = None,
    source_name: str = "",
    progress: ProgressFn | None = None,
    engine: Engine | None = None,
    cluster_by: Sequence[str] | None = None,
) -> DataVersion:
    """Register and run one load (the CLI's and the API's entry point)."""
    with db.session() as s:
        dv = start_load(
            s,
            actor,
            name,
            mode=mode,
            source=source_name or ("sql" if sql_url else (path.name if path else "")),
        )
        version_id = dv.id
    return run_load(
        db,
        actor,
        version_id,
        path=path,
        fmt=fmt,
        sql_url=sql_url,
        sql_query=sql_query,
        sheet=sheet,
        progress=progress,
        engine=engine,
        cluster_by=cluster_by,
    )


def remove_upload(path: Path) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)
