"""The event lists the pages show (dispatcher queue, handler workbench, my reports, search), their
filters and Chinese text search, and their export to CSV and Excel.

A page and its export build the same statement from the same `Filters`, and both turn an event
into a row through `service.describe`, so an exported file shows exactly what the screen shows,
personal fields masked by the same rule.
"""

from __future__ import annotations

import contextvars
import csv
import io
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from xml.sax.saxutils import escape

from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
from sqlalchemy import Select, and_, case, func, or_, select
from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session

from civicgrid.core.auth import Actor
from civicgrid.core.db import Database, utcnow
from civicgrid.core.errors import Invalid
from civicgrid.core.i18n import gettext, set_locale
from civicgrid.core.vocab import PLATFORM_LABELS, Platform
from civicgrid.events import service
from civicgrid.events.models import STATE_LABELS, Event, EventOrg, State
from civicgrid.events.text import tokens

LISTS = ("queue", "work", "mine", "search")
EXPORT_CAP = 100_000
BATCH = 500
KEEP_MAX = 20_000  # looked-up objects (categories, grids, orgs, users) an export keeps at most
BOM = "\ufeff"
LOCAL_OFFSET = service.LOCAL_DAY_OFFSET  # times are shown in China Standard Time

# What waits for the township office: new reports, accepted or handed-back events to dispatch,
# verified events to close (and, below, extension requests to decide).
QUEUE_STATES = (State.reported, State.accepted, State.verified)
# What a department works on.
WORK_STATES = (State.dispatched, State.handling, State.suspended)


def N_(message: str) -> str:
    """Marks a msgid for extraction; translated where it is shown."""
    return message


LEVEL_LABELS = {"village": N_("Village"), "township": N_("Township"), "county": N_("County")}


# ---- filters ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Filters:
    state: State | None = None
    platform: Platform | None = None
    category: str = ""
    q: str = ""
    since: date | None = None
    until: date | None = None

    @classmethod
    def parse(
        cls,
        *,
        state: str = "",
        platform: str = "",
        category: str = "",
        q: str = "",
        since: str = "",
        until: str = "",
    ) -> Filters:
        """Filters from query parameters; a bad value is a clear 422, not an empty list."""
        if state and state not in State.__members__:
            raise Invalid("Unknown state {state}.", state=state, field="state")
        if platform and platform not in Platform.__members__:
            raise Invalid("Choose a platform.")
        category = category.strip()
        if category and not category.isdigit():
            raise Invalid("Unknown event category {code}.", code=category, field="category")
        return cls(
            state=State(state) if state else None,
            platform=Platform(platform) if platform else None,
            category=category[:16],
            q=q.strip()[:100],
            since=_day(since, "since"),
            until=_day(until, "until"),
        )

    def params(self) -> dict[str, str]:
        """The filters as query parameters (for links: pages, exports)."""
        raw = {
            "state": str(self.state or ""),
            "platform": str(self.platform or ""),
            "category": self.category,
            "q": self.q,
            "since": self.since.isoformat() if self.since else "",
            "until": self.until.isoformat() if self.until else "",
        }
        return {k: v for k, v in raw.items() if v}


def _day(value: str, field: str) -> date | None:
    value = value.strip()
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise Invalid("{field} is not a date (YYYY-MM-DD).", field=field) from None


def _local_midnight_utc(d: date) -> datetime:
    return datetime.combine(d, time(), UTC) - LOCAL_OFFSET


# ---- text search --------------------------------------------------------------------------

_TEXT_FIELDS = (Event.number, Event.title, Event.description, Event.address)


def search_terms(q: str) -> list[str]:
    """The words every hit must contain: the query's jieba tokens (stop words dropped), or the
    whole query when it has none. 小区门口垃圾 → 小区, 门口, 垃圾 — found in 小区门口有暴露垃圾."""
    q = q.strip()
    if not q:
        return []
    words = sorted(tokens(q), key=lambda w: (-len(w), w))
    return words[:8] or [q]


def text_clause(q: str) -> Any:
    """Each search term must appear in the number, title, description or address (case-insensitive)."""
    return and_(
        *(or_(*(f.icontains(term, autoescape=True) for f in _TEXT_FIELDS)) for term in search_terms(q))
    )


def text_rank(q: str) -> Any:
    """Ranking: the exact number, then the whole query in the title, then anywhere, then newest."""
    phrase = q.strip()
    return (
        case((Event.number == phrase, 8), else_=0)
        + case((Event.title.icontains(phrase, autoescape=True), 4), else_=0)
        + case(
            (
                or_(
                    Event.description.icontains(phrase, autoescape=True),
                    Event.address.icontains(phrase, autoescape=True),
                ),
                2,
            ),
            else_=0,
        )
    )


# ---- the lists ----------------------------------------------------------------------------


def list_stmt(actor: Actor, name: str, filters: Filters) -> Select[Any]:
    """The statement of one named list, inside the reader's scope (service.visible_stmt)."""
    f = filters
    common: dict[str, Any] = {"state": f.state, "platform": f.platform, "category": f.category or None}
    if name == "queue":
        stmt = service.list_stmt(actor, owner_org_id=actor.org_id, **common)
        if f.state is None:
            stmt = stmt.where(
                or_(
                    Event.state.in_(QUEUE_STATES),
                    and_(Event.state == State.handling, Event.extension_requested_hours.is_not(None)),
                )
            )
        stmt = stmt.order_by(None).order_by(Event.reported_at, Event.id)  # oldest waiting first
    elif name == "work":
        stmt = service.list_stmt(actor, lead_org_id=actor.org_id, order="due", **common)
        if f.state is None:
            stmt = stmt.where(Event.state.in_(WORK_STATES))
    elif name == "mine":
        stmt = service.list_stmt(actor, mine=True, **common)
    elif name == "search":
        stmt = service.list_stmt(actor, **common)
        if f.q:
            stmt = stmt.order_by(None).order_by(text_rank(f.q).desc(), Event.id.desc())
    else:
        raise Invalid("Unknown list {name}.", name=name)
    if f.q:
        stmt = stmt.where(text_clause(f.q))
    if f.since:
        stmt = stmt.where(Event.reported_at >= _local_midnight_utc(f.since))
    if f.until:
        stmt = stmt.where(Event.reported_at < _local_midnight_utc(f.until + timedelta(days=1)))
    return stmt


def count(session: Session, stmt: Select[Any]) -> int:
    return session.scalar(select(func.count()).select_from(stmt.order_by(None).subquery())) or 0


# ---- rows: what a list shows of an event --------------------------------------------------


def local_text(at: datetime | None) -> str:
    """A UTC time as China Standard Time, to the minute."""
    return (at + LOCAL_OFFSET).strftime("%Y-%m-%d %H:%M") if at else ""


@dataclass(frozen=True)
class Deadline:
    stage: str  # accept, handle or verify
    due: datetime
    hours_left: float

    @property
    def overdue(self) -> bool:
        return self.hours_left < 0

    def text(self) -> str:
        """已超期 3 小时 / 5 小时后到期 / 2 天后到期 (wall-clock time to the working-time deadline)."""
        h = abs(self.hours_left)
        if self.overdue:
            if h >= 48:
                return gettext("Overdue by {days} days", days=int(h // 24))
            return gettext("Overdue by {hours} hours", hours=max(1, round(h)))
        if h >= 48:
            return gettext("Due in {days} days", days=int(h // 24))
        if h < 1:
            return gettext("Due within the hour")
        return gettext("Due in {hours} hours", hours=round(h))


STAGE_LABELS = {
    "accept": N_("Acceptance deadline"),
    "handle": N_("Handling deadline"),
    "verify": N_("Verification deadline"),
}


def deadline_of(event: Event, now: datetime | None = None) -> Deadline | None:
    """The due time of the stage the event is in: acceptance, handling or verification."""
    stage, due = {
        State.reported: ("accept", event.accept_due_at),
        State.dispatched: ("handle", event.handle_due_at),
        State.handling: ("handle", event.handle_due_at),
        State.handled: ("verify", event.verify_due_at),
    }.get(event.state, ("", None))
    if due is None:
        return None
    left = (due - (now or utcnow())).total_seconds() / 3600
    return Deadline(stage, due, left)


def row_of(session: Session, actor: Actor, event: Event, now: datetime | None = None) -> dict[str, Any]:
    """describe() plus what lists show: local times, the deadline and translated labels."""
    d = service.describe(session, actor, event)
    dl = deadline_of(event, now)
    d.update(
        event=event,
        reported_local=local_text(event.reported_at),
        deadline=dl,
        deadline_stage=gettext(STAGE_LABELS[dl.stage]) if dl else "",
        deadline_local=local_text(dl.due) if dl else "",
        deadline_text=dl.text() if dl else "",
        state_label=gettext(STATE_LABELS[event.state]),
        platform_label=gettext(PLATFORM_LABELS[event.platform]),
        level_label=gettext(LEVEL_LABELS.get(str(event.level), str(event.level))),
        extension_requested=event.extension_requested_hours,
    )
    return d


# ---- export -------------------------------------------------------------------------------

COLUMNS: list[tuple[str, str]] = [
    ("number", N_("Event number")),
    ("state_label", N_("State")),
    ("title", N_("Title")),
    ("category", N_("Category code")),
    ("category_name", N_("Category")),
    ("platform_label", N_("Platform")),
    ("level_label", N_("Level")),
    ("address", N_("Address")),
    ("grid_code", N_("Grid code")),
    ("lon", N_("Longitude")),
    ("lat", N_("Latitude")),
    ("reporter", N_("Reporter")),
    ("owner_org", N_("Receiving office")),
    ("lead_org", N_("Lead department")),
    ("reported_local", N_("Reported at")),
    ("deadline_stage", N_("Current stage")),
    ("deadline_local", N_("Due")),
    ("deadline_text", N_("Deadline")),
    ("description", N_("Description")),
    ("result", N_("Result")),
    ("rating", N_("Rating")),
    ("duplicate_of", N_("Possible duplicate of")),
]
FORMATS = {
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}


def check_exportable(session: Session, stmt: Select[Any]) -> int:
    """The number of rows, or a clear 422 when the list is longer than an export may be:
    a silently cut file would look complete."""
    n = count(session, stmt)
    if n > EXPORT_CAP:
        raise Invalid(
            "The list holds {count} events; an export holds at most {cap}. Narrow the filters and try again.",
            count=n,
            cap=EXPORT_CAP,
            error_code="export_too_large",
        )
    return n


def _rows(db: Database, actor: Actor, stmt: Select[Any]) -> Iterator[list[Any]]:
    """Rows in batches from a session of their own (the request's session is closed by the time a
    streamed body is read), at most EXPORT_CAP of them."""
    now = utcnow()
    # describe() looks up each row's category, grid, orgs and reporter with session.get; the
    # identity map holds objects weakly, so they would be loaded again for every row (measured:
    # 3 ms a row). Keeping the looked-up objects alive makes repeats free; bounded for memory.
    keep: set[Any] = set()

    def hold(_session: Session, obj: Any) -> None:
        if not isinstance(obj, Event | EventOrg):
            if len(keep) >= KEEP_MAX:
                keep.clear()
            keep.add(obj)

    with db.session() as session:
        sa_event.listen(session, "loaded_as_persistent", hold)
        result = session.scalars(stmt.limit(EXPORT_CAP).execution_options(yield_per=BATCH))
        for event in result:
            row = row_of(session, actor, event, now)
            yield [row[key] if row[key] is not None else "" for key, _label in COLUMNS]


def _safe_csv(value: Any) -> Any:
    """Spreadsheet formula injection: text beginning with = + - @ is read by Excel as a formula."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def in_locale(locale: str, chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Run a body generator in one context with the request's language: a streamed body is read
    step by step from worker threads, each of which would otherwise see a fresh context."""
    ctx = contextvars.copy_context()
    ctx.run(set_locale, locale)
    while True:
        try:
            yield ctx.run(next, chunks)
        except StopIteration:
            return


def csv_chunks(db: Database, actor: Actor, stmt: Select[Any]) -> Iterator[bytes]:
    """UTF-8 with a byte-order mark, so Excel opens Chinese text correctly; streamed in batches."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    buf.write(BOM)
    writer.writerow([gettext(label) for _key, label in COLUMNS])
    for i, row in enumerate(_rows(db, actor, stmt), start=1):
        writer.writerow([_safe_csv(v) for v in row])
        if i % BATCH == 0:
            yield buf.getvalue().encode("utf-8")
            buf.seek(0)
            buf.truncate()
    yield buf.getvalue().encode("utf-8")


# ---- Excel, streamed ----------------------------------------------------------------------------
# An .xlsx is a zip of XML parts. openpyxl can only write the zip when the workbook is complete
# (≈30 s for 100,000 rows before the first byte); here the zip is written into a sink that the
# response drains as it goes: the fixed parts first (the first bytes leave before any row is
# read), then the sheet, compressed on the fly, batch by batch. zipfile writes to an unseekable
# stream with data descriptors, which Excel, LibreOffice and openpyxl read.

_NS = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
_REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
_PKG = "http://schemas.openxmlformats.org/package/2006"
_XML = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
_CT = "application/vnd.openxmlformats-officedocument.spreadsheetml"
_RELS_CT = "application/vnd.openxmlformats-package.relationships+xml"


def _fixed_parts(sheet_name: str) -> list[tuple[str, str]]:
    return [
        (
            "[Content_Types].xml",
            f'<Types xmlns="{_PKG}/content-types">'
            f'<Default Extension="rels" ContentType="{_RELS_CT}"/>'
            '<Default Extension="xml" ContentType="application/xml"/>'
            f'<Override PartName="/xl/workbook.xml" ContentType="{_CT}.sheet.main+xml"/>'
            f'<Override PartName="/xl/worksheets/sheet1.xml" ContentType="{_CT}.worksheet+xml"/>'
            f'<Override PartName="/xl/styles.xml" ContentType="{_CT}.styles+xml"/></Types>',
        ),
        (
            "_rels/.rels",
            f'<Relationships xmlns="{_PKG}/relationships"><Relationship Id="rId1" '
            f'Type="{_REL}/officeDocument" Target="xl/workbook.xml"/></Relationships>',
        ),
        (
            "xl/workbook.xml",
            f'<workbook xmlns="{_NS}" xmlns:r="{_REL}"><sheets>'
            f'<sheet name="{escape(sheet_name[:31], {chr(34): "&quot;"})}" sheetId="1" r:id="rId1"/>'
            "</sheets></workbook>",
        ),
        (
            "xl/_rels/workbook.xml.rels",
            f'<Relationships xmlns="{_PKG}/relationships">'
            f'<Relationship Id="rId1" Type="{_REL}/worksheet" Target="worksheets/sheet1.xml"/>'
            f'<Relationship Id="rId2" Type="{_REL}/styles" Target="styles.xml"/></Relationships>',
        ),
        (
            "xl/styles.xml",
            f'<styleSheet xmlns="{_NS}"><fonts count="1"><font><sz val="11"/><name val="Calibri"/></font>'
            '</fonts><fills count="2"><fill><patternFill patternType="none"/></fill><fill>'
            '<patternFill patternType="gray125"/></fill></fills><borders count="1"><border><left/>'
            '<right/><top/><bottom/><diagonal/></border></borders><cellStyleXfs count="1">'
            '<xf numFmtId="0" fontId="0" fillId="0" borderId="0"/></cellStyleXfs><cellXfs count="1">'
            '<xf numFmtId="0" fontId="0" fillId="0" borderId="0" xfId="0"/></cellXfs>'
            '<cellStyles count="1"><cellStyle name="Normal" xfId="0" builtinId="0"/></cellStyles>'
            "</styleSheet>",
        ),
    ]


def _xlsx_cell(value: Any) -> str:
    """One cell. Text is an inline string — never a formula, even when it begins with "=" —
    without the characters XML cannot hold; numbers stay numbers."""
    if isinstance(value, bool):
        return f'<c t="b"><v>{int(value)}</v></c>'
    if isinstance(value, int | float):
        return f"<c><v>{value!r}</v></c>"
    text = ILLEGAL_CHARACTERS_RE.sub("", str(value))
    if not text:
        return "<c/>"
    return f'<c t="inlineStr"><is><t xml:space="preserve">{escape(text)}</t></is></c>'


def _xlsx_row(number: int, values: list[Any]) -> str:
    return f'<row r="{number}">' + "".join(_xlsx_cell(v) for v in values) + "</row>"


class _Sink(io.RawIOBase):
    """A write-only, unseekable file that keeps what was written until it is taken."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        out = b"".join(self.parts)
        self.parts.clear()
        return out


def xlsx_chunks(db: Database, actor: Actor, stmt: Select[Any]) -> Iterator[bytes]:
    """The .xlsx written as it streams: the first bytes before any row is read, then a chunk per
    BATCH rows, in memory no more than a batch."""
    sink = _Sink()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        for name, xml in _fixed_parts(gettext("Events")):
            zf.writestr(name, _XML + xml)
        yield sink.take()
        with zf.open("xl/worksheets/sheet1.xml", "w") as sheet:
            sheet.write(f'{_XML}<worksheet xmlns="{_NS}"><sheetData>'.encode())
            sheet.write(_xlsx_row(1, [gettext(label) for _key, label in COLUMNS]).encode())
            for i, row in enumerate(_rows(db, actor, stmt), start=2):
                sheet.write(_xlsx_row(i, row).encode())
                if i % BATCH == 0 and (chunk := sink.take()):
                    yield chunk
            sheet.write(b"</sheetData></worksheet>")
    yield sink.take()
