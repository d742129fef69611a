"""Hotline (12345) bulk import: read a CSV or Excel export of hotline tickets (工单), map its
columns, validate every row without writing (the dry run), then create all events in one
transaction or none.

Used by the CLI (`civicgrid events import`) directly and by the web page through an
`ImportJob` that a background thread validates and commits, its progress kept in the row.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import re
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast
from zoneinfo import ZoneInfo

from sqlalchemy import CursorResult, func, select, text, update
from sqlalchemy.orm import Session

from civicgrid.accounts import service as accounts
from civicgrid.accounts.permissions import Permission
from civicgrid.core import audit
from civicgrid.core.auth import Actor
from civicgrid.core.db import Database, utcnow
from civicgrid.core.errors import AppError, Conflict, Invalid, NotFound, PermissionDenied
from civicgrid.core.i18n import gettext
from civicgrid.events import service
from civicgrid.events.models import Category, Channel, Event, ImportJob, ImportStatus, Level
from civicgrid.regions import service as regions

log = logging.getLogger("civicgrid.events.hotline")
P = Permission

MAX_BYTES = 20 * 1024 * 1024
MAX_ROWS = 50_000
MAX_COLUMNS = 200
LOCAL_TZ = ZoneInfo("Asia/Shanghai")  # 12345 exports write China Standard Time without a zone
FUTURE_GRACE = timedelta(minutes=5)  # the hotline centre's clock may run a little ahead of ours
HEADER_SEARCH_ROWS = 5  # exports often put a title line above the header
PROGRESS_SECONDS = 0.5  # how often a running job writes its progress to the database
COMMIT_BATCH = 500  # reports written together in the commit (one receive_events each)
STALE_AFTER = timedelta(minutes=10)  # a running job silent this long died with its process


def N_(message: str) -> str:
    """Marks a msgid for extraction; it is translated where it is shown."""
    return message


# ---- fields and the default mapping -------------------------------------------------------

FIELDS = (
    "external_id",
    "title",
    "description",
    "category",
    "address",
    "lon",
    "lat",
    "reporter_name",
    "reporter_phone",
    "reported_at",
)
REQUIRED = ("external_id", "description", "category", "lon", "lat")
FIELD_LABELS = {
    "external_id": N_("Ticket number"),
    "title": N_("Title"),
    "description": N_("Description"),
    "category": N_("Category (code or name)"),
    "address": N_("Address"),
    "lon": N_("Longitude"),
    "lat": N_("Latitude"),
    "reporter_name": N_("Caller's name"),
    "reporter_phone": N_("Caller's phone"),
    "reported_at": N_("Hotline time"),
}
# Headers of common 12345 exports, most specific first: the first one a file has wins.
DEFAULT_HEADERS: dict[str, tuple[str, ...]] = {
    "external_id": ("工单编号", "工单号", "受理编号", "编号"),
    "title": ("标题", "工单标题", "诉求标题"),
    "description": ("诉求内容", "问题描述", "工单内容", "来电内容", "事件描述"),
    "category": ("事件类别", "诉求类别", "事件分类", "诉求分类", "类别"),
    "address": ("发生地址", "事发地址", "诉求地址", "地址"),
    "lon": ("经度",),
    "lat": ("纬度",),
    "reporter_name": ("来电人", "来电人姓名", "联系人", "诉求人"),
    "reporter_phone": ("联系电话", "来电号码", "联系方式", "电话"),
    "reported_at": ("来电时间", "受理时间", "登记时间"),
}
LIMITS = {
    "external_id": 64,
    "title": service.TITLE_MAX,
    "description": service.DESCRIPTION_MAX,
    "address": 300,
    "reporter_name": 100,
    "reporter_phone": 32,
}

SWAPPED = N_("The point ({lon}, {lat}) lies outside the jurisdiction; are longitude and latitude swapped?")
Reason = tuple[str, dict[str, Any]]  # English msgid and its params, translated when shown
Progress = Callable[[str, int, int], None]  # phase ("validate" or "commit"), done, total


def normalise_header(value: Any) -> str:
    """Header text as people mean it: no BOM, full-width spaces, required-field stars or colons."""
    s = str(value if value is not None else "").replace("\ufeff", "").replace("\u3000", " ").strip()
    return s.rstrip("*＊:：").strip()


# ---- reading files --------------------------------------------------------------------------


@dataclass
class Sheet:
    """A spreadsheet's header and data rows; `line` is the spreadsheet's own row number."""

    file_type: str
    encoding: str
    headers: list[str]
    header_line: int
    rows: list[tuple[int, list[Any]]] = field(default_factory=list)


def _rejected(status: int, error: AppError) -> AppError:
    error.status = status
    return error


def check_size(size: int) -> None:
    if size > MAX_BYTES:
        raise _rejected(
            413,
            Invalid(
                "The file is {size} MB; the limit is {limit} MB.",
                error_code="file_too_large",
                size=f"{size / 1024 / 1024:.1f}",
                limit=MAX_BYTES // 1024 // 1024,
            ),
        )


def check_file(filename: str, content: bytes) -> str:
    """The file's type ("csv" or "xlsx") after checking its size, name and first bytes."""
    check_size(len(content))
    if not content:
        raise Invalid("The file is empty.", error_code="empty_file")
    ext = Path(filename or "").suffix.lower()
    is_zip = content[:4] == b"PK\x03\x04"
    if ext == ".xlsx" and is_zip:
        return "xlsx"
    if ext == ".csv" and not is_zip and b"\x00" not in content[:4096]:
        return "csv"
    if ext == ".xls" or content[:4] == b"\xd0\xcf\x11\xe0":
        raise _rejected(
            415,
            Invalid(
                "{name} is an Excel 97-2003 (.xls) file. Save it as .xlsx or CSV and upload it again.",
                error_code="unsupported_file_type",
                name=filename,
            ),
        )
    raise _rejected(
        415,
        Invalid(
            "{name} is not a CSV or Excel (.xlsx) file (type {type}). Upload a CSV or .xlsx export.",
            error_code="unsupported_file_type",
            name=filename,
            type=ext or "?",
        ),
    )


def decode_csv(content: bytes) -> tuple[str, str]:
    """UTF-8 (with or without BOM) when the bytes are strictly UTF-8, else GB18030 (a superset of
    GBK and GB2312, which Chinese Excel writes by default)."""
    try:
        return content.decode("utf-8-sig"), "utf-8"
    except UnicodeDecodeError:
        pass
    try:
        return content.decode("gb18030"), "gb18030"
    except UnicodeDecodeError:
        raise Invalid(
            "The CSV file is neither UTF-8 nor GBK text. Save it again as CSV (UTF-8).",
            error_code="bad_encoding",
        ) from None


def _delimiter(first_line: str) -> str:
    # Exports use commas, some tabs or semicolons; the header line has the most of its delimiter.
    return max(",\t;", key=first_line.count)


def _csv_rows(content: bytes) -> tuple[str, Iterator[list[str]]]:
    decoded, encoding = decode_csv(content)
    first = decoded.split("\n", 1)[0]
    reader = csv.reader(io.StringIO(decoded, newline=""), delimiter=_delimiter(first))
    return encoding, reader


def _xlsx_rows(content: bytes) -> Iterator[list[Any]]:
    from openpyxl import load_workbook

    try:
        book = load_workbook(io.BytesIO(content), read_only=True, data_only=True)
    except (zipfile.BadZipFile, KeyError, OSError, ValueError):
        raise Invalid("The Excel file could not be read; it may be damaged.", error_code="bad_file") from None
    try:
        sheet = book.worksheets[0]
        for row in sheet.iter_rows(values_only=True):
            yield list(row)
    finally:
        book.close()


def _is_blank(cells: list[Any]) -> bool:
    return all(c is None or (isinstance(c, str) and not c.strip()) for c in cells)


def _header_index(candidates: list[tuple[int, list[Any]]]) -> int:
    """The first of the top rows with at least two known headers (else the first non-blank row)."""
    known = {normalise_header(h) for names in DEFAULT_HEADERS.values() for h in names} | set(FIELDS)
    for i, (_line, cells) in enumerate(candidates):
        if sum(1 for c in cells if normalise_header(c) in known) >= 2:
            return i
    return 0


def read_sheet(filename: str, content: bytes, *, head_only: bool = False) -> Sheet:
    """Parse the file: its type, encoding, header row and (unless head_only) every data row.
    Blank rows are left out; line numbers stay those the spreadsheet shows."""
    file_type = check_file(filename, content)
    encoding = ""
    raw: Iterator[list[Any]]
    if file_type == "csv":
        encoding, raw = _csv_rows(content)
    else:
        raw = _xlsx_rows(content)
    try:
        numbered = enumerate(raw, start=1)
        top: list[tuple[int, list[Any]]] = []
        for line, cells in numbered:
            if not _is_blank(cells):
                top.append((line, cells))
            if len(top) >= HEADER_SEARCH_ROWS:
                break
        if not top:
            raise Invalid("The file has no header row.", error_code="no_header")
        at = _header_index(top)
        header_line, header_cells = top[at]
        headers = [normalise_header(c) for c in header_cells]
        while headers and not headers[-1]:
            headers.pop()
        if len(headers) > MAX_COLUMNS:
            raise Invalid(
                "The file has more than {limit} columns.", error_code="too_many_columns", limit=MAX_COLUMNS
            )
        sheet = Sheet(file_type, encoding, headers, header_line)
        if head_only:
            return sheet
        pending = top[at + 1 :]
        for line, cells in _chain(pending, numbered):
            if _is_blank(cells):
                continue
            if len(sheet.rows) >= MAX_ROWS:
                raise Invalid(
                    "The file has more than {limit} rows. Split it into smaller files.",
                    error_code="too_many_rows",
                    limit=f"{MAX_ROWS:,}",
                )
            sheet.rows.append((line, cells))
        return sheet
    except csv.Error:
        raise Invalid("The CSV file is malformed: {problem}.", error_code="bad_file", problem="csv") from None
    finally:
        close = getattr(raw, "close", None)
        if close:
            close()


def _chain(
    first: list[tuple[int, list[Any]]], rest: Iterator[tuple[int, list[Any]]]
) -> Iterator[tuple[int, list[Any]]]:
    yield from first
    yield from rest


# ---- mapping ----------------------------------------------------------------------------------


def default_mapping(headers: list[str]) -> dict[str, str]:
    """header → field for the headers a 12345 export usually has (and our own field names)."""
    present = set(headers)
    out: dict[str, str] = {}
    for f in FIELDS:
        for name in (*DEFAULT_HEADERS[f], f):
            if name in present and name not in out:
                out[name] = f
                break
    return out


def resolve_mapping(headers: list[str], custom: dict[str, Any] | None = None) -> dict[str, str]:
    """The default mapping overridden by `custom` (header → field, or null/"" to ignore a column).
    A field named in `custom` is taken from that column only."""
    if custom is not None and not isinstance(custom, dict):
        raise Invalid("The column mapping must be a JSON object of header → field.", error_code="bad_mapping")
    custom = {normalise_header(k): (v or "") for k, v in (custom or {}).items()}
    unknown_headers = [h for h in custom if h not in headers]
    if unknown_headers:
        raise Invalid(
            "The mapping names columns the file does not have: {columns}.",
            error_code="bad_mapping",
            columns="、".join(unknown_headers),
        )
    bad_fields = [str(v) for v in custom.values() if v and v not in FIELDS]
    if bad_fields:
        raise Invalid(
            "Unknown fields in the mapping: {fields}. Known fields: {known}.",
            error_code="bad_mapping",
            fields=", ".join(bad_fields),
            known=", ".join(FIELDS),
        )
    chosen = set(custom.values())
    mapping = {h: f for h, f in default_mapping(headers).items() if h not in custom and f not in chosen}
    mapping.update({h: f for h, f in custom.items() if f})
    return mapping


def check_mapping(mapping: dict[str, str]) -> None:
    """Every required field is mapped, and no field from two columns."""
    seen: dict[str, str] = {}
    for header, f in mapping.items():
        if f in seen:
            raise Invalid(
                "The field {field} is mapped from two columns: {first} and {second}.",
                error_code="bad_mapping",
                field=gettext(FIELD_LABELS[f]),
                first=seen[f],
                second=header,
            )
        seen[f] = header
    missing = missing_fields(mapping)
    if missing:
        raise Invalid(
            "No column is mapped to: {fields}.",
            error_code="bad_mapping",
            fields="、".join(gettext(FIELD_LABELS[f]) for f in missing),
        )


def missing_fields(mapping: dict[str, str]) -> list[str]:
    return [f for f in REQUIRED if f not in mapping.values()]


# ---- validation -------------------------------------------------------------------------------


@dataclass
class Ticket:
    """A valid row, ready to become an event."""

    line: int
    external_id: str
    category_code: str
    lon: float
    lat: float
    description: str
    title: str = ""
    address: str = ""
    reporter_name: str = ""
    reporter_phone: str = ""
    reported_at: datetime | None = None


@dataclass
class Problem:
    """A bad row (blocks the commit) or a skipped one (already imported: nothing to do)."""

    line: int
    ticket: str
    reasons: list[Reason]
    skipped: bool = False

    def messages(self) -> list[str]:
        # A "field" parameter is itself a msgid (a column's label).
        return [
            gettext(msg, **{k: gettext(v) if k == "field" else v for k, v in params.items()})
            for msg, params in self.reasons
        ]

    def as_json(self) -> dict[str, Any]:
        return {"line": self.line, "ticket": self.ticket, "skipped": self.skipped, "reasons": self.reasons}


@dataclass
class Report:
    rows: int
    tickets: list[Ticket]
    problems: list[Problem]

    @property
    def bad(self) -> list[Problem]:
        return [p for p in self.problems if not p.skipped]

    @property
    def skipped(self) -> list[Problem]:
        return [p for p in self.problems if p.skipped]


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # a ticket number Excel stored as a number
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    return str(value).strip()


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    s = _text(value).replace("，", ".").replace("°", "")
    try:
        f = float(s)
    except ValueError:
        return None
    return f if math.isfinite(f) else None


_DATE_FORMATS = (
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%d %H:%M",
    "%Y/%m/%d %H:%M:%S",
    "%Y/%m/%d %H:%M",
    "%Y.%m.%d %H:%M:%S",
    "%Y.%m.%d %H:%M",
    "%Y年%m月%d日 %H:%M:%S",
    "%Y年%m月%d日 %H:%M",
    "%Y年%m月%d日%H时%M分",
    "%Y年%m月%d日",
    "%Y-%m-%d",
    "%Y/%m/%d",
    "%Y%m%d%H%M%S",
)


def parse_time(value: Any) -> datetime | None:
    """A hotline time as UTC; times without a zone are China Standard Time."""
    at: datetime | None = None
    if isinstance(value, datetime):
        at = value
    elif isinstance(value, int | float) and not isinstance(value, bool) and 20000 < value < 80000:
        from openpyxl.utils.datetime import from_excel

        at = from_excel(value)  # an Excel date serial in a cell not formatted as a date
    else:
        s = re.sub(r"\s+", " ", _text(value))
        if not s:
            return None
        try:
            at = datetime.fromisoformat(s)
        except ValueError:
            for fmt in _DATE_FORMATS:
                try:
                    at = datetime.strptime(s, fmt)
                    break
                except ValueError:
                    continue
    if at is None:
        return None
    if at.tzinfo is None:
        at = at.replace(tzinfo=LOCAL_TZ)
    return at.astimezone(UTC)


_SCIENTIFIC = re.compile(r"^\d+(\.\d+)?[eE]\+\d+$")


@dataclass
class _Context:
    """Lookups shared by every row of one validation."""

    by_code: dict[str, Category]
    by_name: dict[str, list[Category]]
    grid_paths: dict[int, str] = field(default_factory=dict)
    owners: dict[tuple[int, str], Reason | None] = field(default_factory=dict)


def _categories(session: Session) -> _Context:
    all_ = service.list_categories(session, include_inactive=True)
    by_name: dict[str, list[Category]] = {}
    for c in all_:
        by_name.setdefault(c.name, []).append(c)
    return _Context({c.code: c for c in all_}, by_name)


def _category(ctx: _Context, value: str) -> tuple[Category | None, Reason | None]:
    """Our category code or our category name, exactly."""
    if not value:
        return None, (N_("The category is missing."), {})
    found = [ctx.by_code[value]] if value in ctx.by_code else ctx.by_name.get(value, [])
    if not found:
        return None, (
            N_("Unknown category {category}: use a code or name of our catalogue."),
            {"category": value},
        )
    if len(found) > 1:
        return None, (N_("The category name {category} is ambiguous; use its code."), {"category": value})
    c = found[0]
    if c.parent_id is None:
        return None, (
            N_("{category} is a main class; choose one of its sub-categories."),
            {"category": value},
        )
    if not c.active:
        return None, (N_("The category {category} is no longer in use."), {"category": value})
    return c, None


def _already_imported(session: Session, ids: list[str]) -> dict[str, str]:
    """ticket number → event number, for tickets already imported from the hotline."""
    out: dict[str, str] = {}
    for i in range(0, len(ids), 500):
        chunk = ids[i : i + 500]
        rows = session.execute(
            select(Event.external_id, Event.number).where(
                Event.channel == Channel.hotline, Event.external_id.in_(chunk)
            )
        )
        out.update({str(ext): num for ext, num in rows})
    return out


def _place_problem(
    session: Session, actor: Actor, ctx: _Context, grid_id: int, lon: float, lat: float, category: Category
) -> Reason | None:
    """Scope and routing of a point already known to lie in a grid."""
    if grid_id not in ctx.grid_paths:
        ctx.grid_paths[grid_id] = regions.get(session, grid_id).path
    if not actor.in_scope(ctx.grid_paths[grid_id]):
        return (N_("The point ({lon}, {lat}) lies outside your area."), {"lon": lon, "lat": lat})
    key = (grid_id, str(category.start_level))
    if key not in ctx.owners:
        try:
            service.owner_for(session, service.place_of(session, lon, lat), Level(category.start_level))
            ctx.owners[key] = None
        except AppError as exc:
            ctx.owners[key] = (exc.message, exc.params)
    return ctx.owners[key]


def validate(
    session: Session,
    actor: Actor,
    sheet: Sheet,
    mapping: dict[str, str],
    *,
    progress: Progress | None = None,
) -> Report:
    """Check every row without writing: the dry run. Every bad row gets every reason it has."""
    check_can_import(actor)
    check_mapping(mapping)
    col = {f: sheet.headers.index(h) for h, f in mapping.items()}
    ctx = _categories(session)
    now = utcnow()
    total = len(sheet.rows)

    def cell(cells: list[Any], f: str) -> Any:
        i = col.get(f)
        return cells[i] if i is not None and i < len(cells) else None

    parsed: list[tuple[Ticket, list[Reason], Category | None]] = []
    first_line: dict[str, int] = {}
    for n, (line, cells) in enumerate(sheet.rows, start=1):
        reasons: list[Reason] = []
        values = {f: _text(cell(cells, f)) for f in LIMITS}
        ticket_id = values["external_id"]
        if not ticket_id:
            reasons.append((N_("The ticket number is missing."), {}))
        elif _SCIENTIFIC.match(ticket_id):
            reasons.append(
                (
                    N_("Excel turned the ticket number into {value}; format the column as text."),
                    {"value": ticket_id},
                )
            )
        elif ticket_id in first_line:
            reasons.append(
                (
                    N_("Ticket {ticket} also appears in row {line}."),
                    {"ticket": ticket_id, "line": first_line[ticket_id]},
                )
            )
        else:
            first_line[ticket_id] = line
        if not values["description"]:
            reasons.append((N_("The description is missing."), {}))
        for f, limit in LIMITS.items():
            if len(values[f]) > limit:
                reasons.append(
                    (
                        N_("{field} is longer than {limit} characters."),
                        {"field": FIELD_LABELS[f], "limit": limit},
                    )
                )
        category, why = _category(ctx, _text(cell(cells, "category")))
        if why:
            reasons.append(why)
        lon, lat = _number(cell(cells, "lon")), _number(cell(cells, "lat"))
        if lon is None or lat is None:
            reasons.append((N_("The coordinates are missing or not numbers."), {}))
        reported_at = None
        if "reported_at" in col:
            raw = cell(cells, "reported_at")
            reported_at = parse_time(raw)
            if reported_at is None:
                reasons.append(
                    (
                        N_("The hotline time {value} is not a date and time (e.g. 2026-11-20 09:30)."),
                        {"value": _text(raw)},
                    )
                    if _text(raw)
                    else (N_("The hotline time is missing."), {})
                )
            elif reported_at > now + FUTURE_GRACE:
                reasons.append((N_("The hotline time {value} is in the future."), {"value": _text(raw)}))
        ticket = Ticket(
            line=line,
            external_id=ticket_id,
            category_code=category.code if category else "",
            lon=lon if lon is not None else math.nan,
            lat=lat if lat is not None else math.nan,
            description=values["description"],
            title=values["title"],
            address=values["address"],
            reporter_name=values["reporter_name"],
            reporter_phone=values["reporter_phone"],
            reported_at=reported_at,
        )
        parsed.append((ticket, reasons, category))
        if progress and (n % 200 == 0 or n == total):
            progress("validate", n // 2, total)  # the first half: reading the cells

    # Locations in one vectorised lookup, then scope and routing once per grid.
    lons = [t.lon if math.isfinite(t.lon) else 0.0 for t, _r, _c in parsed]
    lats = [t.lat if math.isfinite(t.lat) else 0.0 for t, _r, _c in parsed]
    grids = [int(g) for g in regions.grids_for_points(session, lons, lats)] if parsed else []
    swapped = [int(g) for g in regions.grids_for_points(session, lats, lons)] if parsed else []
    imported = _already_imported(session, list(first_line))
    report = Report(rows=total, tickets=[], problems=[])
    for n, ((ticket, reasons, category), grid_id, swap_id) in enumerate(
        zip(parsed, grids, swapped, strict=True), start=1
    ):
        if math.isfinite(ticket.lon) and math.isfinite(ticket.lat):
            if grid_id < 0:
                pt = {"lon": ticket.lon, "lat": ticket.lat}
                outside = N_("The point ({lon}, {lat}) lies outside the jurisdiction.")
                reasons.append((SWAPPED if swap_id >= 0 else outside, pt))
            elif category is not None:
                why = _place_problem(session, actor, ctx, grid_id, ticket.lon, ticket.lat, category)
                if why:
                    reasons.append(why)
        # An imported ticket is skipped whatever else its row says: its event exists already.
        first = first_line.get(ticket.external_id) == ticket.line
        done_before = imported.get(ticket.external_id) if first else None
        if done_before:
            report.problems.append(
                Problem(
                    ticket.line,
                    ticket.external_id,
                    [(N_("Already imported as event {number}; skipped."), {"number": done_before})],
                    skipped=True,
                )
            )
        elif reasons:
            report.problems.append(Problem(ticket.line, ticket.external_id, reasons))
        else:
            report.tickets.append(ticket)
        if progress and (n % 200 == 0 or n == total):
            progress("validate", (total + n) // 2, total)  # the second half: places and tickets
    return report


# ---- commit ---------------------------------------------------------------------------------


class ImportRefused(Invalid):
    """The commit found bad rows: nothing was written. `report` lists them."""

    def __init__(self, report: Report) -> None:
        super().__init__(
            "{count} rows have problems; nothing was written. Fix them and import the file again.",
            error_code="import_refused",
            details=[
                {
                    "line": p.line,
                    "message": gettext("Row {line}: {reasons}", line=p.line, reasons="；".join(p.messages())),
                }
                for p in report.bad
            ],
            count=len(report.bad),
        )
        self.report = report


def check_can_import(actor: Actor) -> None:
    if not actor.can(P.events_import):
        raise PermissionDenied("Your role does not allow this.")


def _lock_imports(session: Session, job: ImportJob) -> None:
    """One commit at a time, so two imports of the same tickets never both create them: an
    advisory lock on PostgreSQL; on SQLite a first write takes the database's write lock."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(1234512345)"))
    else:
        session.flush()
        session.execute(update(ImportJob).where(ImportJob.id == job.id).values(updated_at=utcnow()))


@dataclass
class Outcome:
    report: Report
    created: list[tuple[int, str]]  # (line, event number)


def commit(
    session: Session,
    actor: Actor,
    sheet: Sheet,
    mapping: dict[str, str],
    *,
    job: ImportJob,
    progress: Progress | None = None,
) -> Outcome:
    """Validate again under the import lock, then create every event in the caller's transaction
    (all or nothing); raises ImportRefused when any row is bad. The caller commits."""
    _lock_imports(session, job)
    report = validate(session, actor, sheet, mapping, progress=progress)
    if report.bad:
        raise ImportRefused(report)
    created: list[tuple[int, str]] = []
    failed: list[Problem] = []
    total = len(report.tickets)
    for start in range(0, total, COMMIT_BATCH):
        chunk = report.tickets[start : start + COMMIT_BATCH]
        results = service.receive_events(
            session,
            [
                service.Report(
                    actor,
                    category_code=t.category_code,
                    lon=t.lon,
                    lat=t.lat,
                    description=t.description,
                    channel=Channel.hotline,
                    title=t.title,
                    address=t.address,
                    reporter_name=t.reporter_name,
                    reporter_phone=t.reporter_phone,
                    external_id=t.external_id,
                    reported_at=t.reported_at,
                )
                for t in chunk
            ],
        )
        for t, result in zip(chunk, results, strict=True):
            if isinstance(result, AppError):  # a rule the dry run could not foresee: report it
                failed.append(Problem(t.line, t.external_id, [(result.message, result.params)]))
            else:
                created.append((t.line, result.event.number))
                # written: keep the session's memory flat (not expunge_all: the job stays in it)
                session.expunge(result.event)
                session.expunge(result.entry)
        if progress:
            progress("commit", min(start + COMMIT_BATCH, total), total)
    if failed:
        report.problems.extend(failed)
        report.problems.sort(key=lambda p: p.line)
        raise ImportRefused(report)
    audit.record(
        session,
        actor,
        "event.import",
        "event_import",
        job.id,
        extra={
            "channel": str(Channel.hotline),
            "file": job.filename,
            "sha256": job.sha256,
            "rows": report.rows,
            "created": len(created),
            "skipped": len(report.skipped),
        },
    )
    return Outcome(report, created)


# ---- import jobs ------------------------------------------------------------------------------


def new_job(
    session: Session,
    actor: Actor,
    *,
    filename: str,
    content: bytes,
    custom_mapping: dict[str, Any] | None = None,
    keep_content: bool = True,
) -> ImportJob:
    """Check the file (type, size, header) and record it. With the default mapping, a file whose
    columns do not cover the required fields waits for a mapping; a custom one must be complete."""
    check_can_import(actor)
    sheet = read_sheet(filename, content, head_only=True)
    mapping = resolve_mapping(sheet.headers, custom_mapping)
    if custom_mapping is not None:
        check_mapping(mapping)
    job = ImportJob(
        user_id=actor.user_id,
        membership_id=actor.membership_id,
        org_id=actor.org_id,
        region_path=actor.region_path,
        filename=Path(filename).name[:200],
        file_type=sheet.file_type,
        encoding=sheet.encoding,
        size=len(content),
        sha256=hashlib.sha256(content).hexdigest(),
        content=content if keep_content else b"",
        headers=json.dumps(sheet.headers, ensure_ascii=False),
        header_line=sheet.header_line,
        mapping=json.dumps(mapping, ensure_ascii=False),
        status=ImportStatus.validating if not missing_fields(mapping) else ImportStatus.mapping,
        phase="validate",
    )
    session.add(job)
    session.flush()
    return job


def visible_jobs(session: Session, actor: Actor, limit: int = 20) -> list[ImportJob]:
    """Imports by the actor and, for importers, by others inside their area; newest first."""
    check_can_import(actor)
    stmt = (
        select(ImportJob)
        .where((ImportJob.user_id == actor.user_id) | ImportJob.region_path.startswith(actor.region_path))
        .order_by(ImportJob.id.desc())
        .limit(limit)
    )
    return list(session.scalars(stmt))


def get_job(session: Session, actor: Actor, job_id: int, *, own: bool = False) -> ImportJob:
    """A job the actor may see (own=True: one they may change, i.e. their own)."""
    check_can_import(actor)
    job = session.get(ImportJob, job_id)
    if job is None or not (job.user_id == actor.user_id or actor.in_scope(job.region_path)):
        raise NotFound("No import with this number.")
    if own and job.user_id != actor.user_id:
        raise PermissionDenied("Only the person who uploaded the file can change or commit this import.")
    return job


_RUNNING = (ImportStatus.validating, ImportStatus.committing)


def set_mapping(session: Session, actor: Actor, job_id: int, custom: dict[str, Any]) -> ImportJob:
    """A new column mapping over the default one (see resolve_mapping): checked now, then the
    dry run starts again."""
    job = get_job(session, actor, job_id, own=True)
    if (job.status in _RUNNING and not is_stale(job)) or job.status == ImportStatus.committed:
        raise Conflict("This import is busy or already committed.")
    mapping = resolve_mapping(json.loads(job.headers), custom)
    check_mapping(mapping)
    job.mapping = json.dumps(mapping, ensure_ascii=False)
    _reset(job, ImportStatus.validating)
    return job


def revalidate(session: Session, actor: Actor, job_id: int) -> ImportJob:
    """Run the dry run again (e.g. after catalogue or region changes, or a stalled job)."""
    job = get_job(session, actor, job_id, own=True)
    if job.status in (ImportStatus.mapping, ImportStatus.committed) or (
        job.status in _RUNNING and not is_stale(job)
    ):
        raise Conflict("This import is busy or already committed.")
    _reset(job, ImportStatus.validating)
    return job


def _reset(job: ImportJob, status: ImportStatus) -> None:
    job.status = status
    job.phase = "validate"
    job.done = job.total = 0
    job.error, job.error_params = "", "{}"


def request_commit(session: Session, actor: Actor, job_id: int) -> ImportJob:
    """Move a clean dry run to committing; a second click finds it moved already (409)."""
    job = get_job(session, actor, job_id, own=True)
    if job.status == ImportStatus.validated and job.bad_rows:
        raise Invalid(
            "{count} rows have problems; nothing was written. Fix them and import the file again.",
            count=job.bad_rows,
        )
    moved = cast(
        "CursorResult[Any]",
        session.execute(
            update(ImportJob)
            .where(
                ImportJob.id == job.id, ImportJob.status == ImportStatus.validated, ImportJob.bad_rows == 0
            )
            .values(
                status=ImportStatus.committing, phase="commit", done=0, total=job.ok_rows, updated_at=utcnow()
            )
            .execution_options(synchronize_session=False)
        ),
    ).rowcount
    if not moved:
        raise Conflict("This import is busy or already committed.")
    session.refresh(job)
    return job


def is_stale(job: ImportJob) -> bool:
    """A running job that stopped reporting (its process ended) may be restarted."""
    if job.status not in _RUNNING or job.id in _LIVE:
        return False
    return utcnow() - job.updated_at > STALE_AFTER


def _actor_of(session: Session, job: ImportJob) -> Actor:
    user = accounts.get_user(session, job.user_id)
    if not user.active:
        raise PermissionDenied("This account is disabled.")
    return accounts.actor_for_user(session, user, job.membership_id, via="session")


def _store_report(job: ImportJob, report: Report) -> None:
    job.rows = report.rows
    job.ok_rows = len(report.tickets)
    job.bad_rows = len(report.bad)
    job.skipped_rows = len(report.skipped)
    job.problems = json.dumps([p.as_json() for p in report.problems], ensure_ascii=False, default=str)


# Progress of the jobs this process runs: on SQLite a committing job cannot write its row
# (its own transaction holds the write lock), so the pages of this process read it here.
_LIVE: dict[int, tuple[str, int, int]] = {}


class _ProgressWriter:
    def __init__(self, db: Database, job_id: int) -> None:
        self.db = db
        self.job_id = job_id
        self.last = 0.0
        self.to_database = True

    def __call__(self, phase: str, done: int, total: int) -> None:
        _LIVE[self.job_id] = (phase, done, total)
        now = time.monotonic()
        if not self.to_database or now - self.last < PROGRESS_SECONDS:
            return
        self.last = now
        with self.db.session() as s:
            s.execute(
                update(ImportJob)
                .where(ImportJob.id == self.job_id)
                .values(phase=phase, done=done, total=total, updated_at=utcnow())
            )


def progress_of(job: ImportJob) -> tuple[str, int, int]:
    return _LIVE.get(job.id) or (job.phase, job.done, job.total)


def run_job(db: Database, job_id: int) -> None:
    """The background work of a job, in its own sessions: the dry run while it is validating,
    the import while it is committing."""
    writer = _ProgressWriter(db, job_id)
    try:
        with db.session() as s:
            job = s.get(ImportJob, job_id)
            if job is None or job.status not in _RUNNING:
                return
            committing = job.status == ImportStatus.committing
            # On SQLite the commit holds the only write lock: a second connection would wait on it.
            writer.to_database = not (committing and db.engine.dialect.name == "sqlite")
            try:
                actor = _actor_of(s, job)
                sheet = read_sheet(job.filename, job.content)
                mapping = json.loads(job.mapping)
                if committing:
                    outcome = commit(s, actor, sheet, mapping, job=job, progress=writer)
                    _store_report(job, outcome.report)
                    job.created_rows = len(outcome.created)
                    job.created = json.dumps(outcome.created)
                    job.status = ImportStatus.committed
                    job.committed_at = utcnow()
                    job.content = b""  # the events hold the data now; keep no second copy
                else:
                    _store_report(job, validate(s, actor, sheet, mapping, progress=writer))
                    job.status = ImportStatus.validated
                job.done = job.total = job.rows if not committing else job.created_rows
            except ImportRefused as refused:
                s.rollback()
                _finish_refused(db, job_id, refused)
                return
            except AppError as exc:
                s.rollback()
                _finish_failed(db, job_id, exc.message, exc.params)
                return
    except Exception as exc:  # never leave a job "running" forever; log no row contents
        log.error("hotline import %s stopped: %s", job_id, type(exc).__name__)
        _finish_failed(
            db, job_id, "The import stopped because of an unexpected error; nothing was written.", {}
        )
    finally:
        _LIVE.pop(job_id, None)


def _finish_refused(db: Database, job_id: int, refused: ImportRefused) -> None:
    with db.session() as s:
        job = s.get(ImportJob, job_id)
        if job is not None:
            _store_report(job, refused.report)
            job.status = ImportStatus.validated
            job.error, job.error_params = refused.message, json.dumps(refused.params)


def _finish_failed(db: Database, job_id: int, message: str, params: dict[str, Any]) -> None:
    with db.session() as s:
        job = s.get(ImportJob, job_id)
        if job is not None:
            job.status = ImportStatus.failed
            job.error, job.error_params = message, json.dumps(params, default=str)


def start_job(db: Database, job_id: int) -> threading.Thread:
    """Run the job in a thread of this process (called once the request has committed)."""
    thread = threading.Thread(target=run_job, args=(db, job_id), name=f"hotline-import-{job_id}", daemon=True)
    _LIVE.setdefault(job_id, ("validate", 0, 0))
    thread.start()
    return thread


KEEP_FILES = timedelta(days=7)


def purge_files(session: Session, *, now: datetime | None = None) -> int:
    """Drop the stored files of imports never committed after KEEP_FILES (they hold callers'
    names and phones); their reports stay. For the housekeeping job; returns how many."""
    cutoff = (now or utcnow()) - KEEP_FILES
    result = cast(
        "CursorResult[Any]",
        session.execute(
            update(ImportJob)
            .where(
                ImportJob.created_at < cutoff,
                ImportJob.status.not_in(_RUNNING),
                func.length(ImportJob.content) > 0,
            )
            .values(content=b"")
            .execution_options(synchronize_session=False)
        ),
    )
    return result.rowcount


# ---- presentation data shared by the page, the JSON API and the CLI -----------------------------


def problems_of(job: ImportJob) -> list[Problem]:
    return [
        Problem(p["line"], p["ticket"], [(m, a) for m, a in p["reasons"]], p["skipped"])
        for p in json.loads(job.problems)
    ]


def created_of(job: ImportJob) -> list[tuple[int, str]]:
    return [(int(line), str(number)) for line, number in json.loads(job.created)]


def error_of(job: ImportJob) -> str:
    return gettext(job.error, **json.loads(job.error_params)) if job.error else ""


def report_lines(report: Report) -> list[str]:
    """One translated line per bad or skipped row, in file order."""
    return [
        gettext(
            "Row {line} (ticket {ticket}): {reasons}",
            line=p.line,
            ticket=p.ticket or "-",
            reasons="；".join(p.messages()),
        )
        for p in report.problems
    ]


def summary_line(report: Report) -> str:
    return gettext(
        "{rows} rows: {ok} valid new tickets, {bad} bad rows, {skipped} already imported.",
        rows=report.rows,
        ok=len(report.tickets),
        bad=len(report.bad),
        skipped=len(report.skipped),
    )


# ---- the CLI's import -----------------------------------------------------------------------------


def import_file(
    db: Database,
    *,
    path: Path,
    username: str,
    custom_mapping: dict[str, Any] | None = None,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> tuple[ImportJob | None, Outcome]:
    """`civicgrid events import`: the whole import in this process, as the named user. A dry run
    writes nothing; a commit writes the events and the job record together, or raises
    ImportRefused (with the report) and writes nothing."""
    check_size(path.stat().st_size)
    content = path.read_bytes()
    with db.session() as s:
        user = accounts.get_user_by_username(s, username)
        if user is None or not user.active:
            raise NotFound("No active user {username}.", username=username)
        actor = accounts.actor_for_user(s, user)
        check_can_import(actor)
        sheet = read_sheet(path.name, content)
        mapping = resolve_mapping(sheet.headers, custom_mapping)
        check_mapping(mapping)
        if dry_run:
            return None, Outcome(validate(s, actor, sheet, mapping, progress=progress), [])
        job = new_job(
            s, actor, filename=path.name, content=content, custom_mapping=custom_mapping, keep_content=False
        )
        job.status = ImportStatus.committing
        outcome = commit(s, actor, sheet, mapping, job=job, progress=progress)
        _store_report(job, outcome.report)
        job.created_rows = len(outcome.created)
        job.created = json.dumps(outcome.created)
        job.status = ImportStatus.committed
        job.phase, job.done, job.total = "commit", job.created_rows, job.created_rows
        job.committed_at = utcnow()
        return job, outcome
