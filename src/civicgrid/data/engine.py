"""The storage and query engine: the one module that talks to DuckDB (issue 4, part 11).

Everything the data platform stores or reads goes through `Engine`:

- writing: `staging_dir` → `load` (read a staged source, cast, evaluate the field rules in
  SQL, write valid rows as Parquet and rejected rows aside) → `publish` (atomic rename into
  `<data dir>/datasets/<name>/v<N>/`) or `discard`;
- reading: `query` (a `QueryPlan`: fields, filters, sort, paging, total, masking — B's data
  API and CKAN's datastore_search), `run_sql` (a validated SELECT over named views with a
  timeout and a memory limit — C's sandbox), `schema`, `count`, `version_files`;
- lifecycle: `remove_version` (destruction: delete the files, return their hashes).

Every identifier is quoted by `ident`, every value bound as a parameter or, where DuckDB
takes no parameters (COPY targets, file lists), written by `literal` from values this module
controls. A Trino or Spark SQL engine would implement the same methods over the same
Parquet layout: see docs/scaling.md. Nothing else in the code base imports duckdb.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import mmap
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import duckdb
import duckdb.func

from civicgrid.core.errors import Invalid

log = logging.getLogger("civicgrid.data.engine")

# ---------------------------------------------------------------------------------------------
# Shapes shared with ingest, the data API, the CKAN API and the sandbox.
# ---------------------------------------------------------------------------------------------

#: DatasetField.type → the engine's column type.
SQL_TYPES = {
    "string": "VARCHAR",
    "integer": "BIGINT",
    "float": "DOUBLE",
    "boolean": "BOOLEAN",
    "date": "DATE",
    "datetime": "TIMESTAMP",
}
#: Filter operators a `QueryPlan` accepts.
OPS = ("=", "!=", "<", "<=", ">", ">=", "in", "like", "between", "is null", "is not null")
#: Masks `query` and `run_sql` apply in SQL (DatasetField.mask).
MASKS = ("id_number", "phone", "name", "partial", "hash")
#: Columns the engine keeps beside the data (source line, reasons, raw values); never shown.
HIDDEN_PREFIX = "_"
ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
ID_CHECK = "10X98765432"
#: How the boolean type reads a value (lower case, trimmed); anything else is not a boolean.
BOOL_TRUE = ("true", "t", "1", "yes", "y", "是")
BOOL_FALSE = ("false", "f", "0", "no", "n", "否")
MOBILE_RE = r"1[3-9]\d{9}"
_IDENT_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{1,99}$")


@dataclass(frozen=True)
class Rules:
    """Per-field checks evaluated vectorised in SQL; a NULL value passes all but `not_null`."""

    not_null: bool = False
    regex: str = ""  # RE2 syntax, matched against the whole value
    min: float | str | None = None  # numbers; ISO dates for date fields
    max: float | str | None = None
    date_format: str = ""  # strptime format a string field must parse with (e.g. %Y-%m-%d)
    id_number: bool = False  # 18-digit 身份证号 with a valid birth date and GB 11643 check digit
    mobile: bool = False  # mainland mobile number ^1[3-9]\d{9}$


@dataclass(frozen=True)
class ColumnSpec:
    """One output column: its name and type, the source column it comes from, its rules."""

    name: str
    type: str = "string"  # a key of SQL_TYPES
    source: str = ""  # the header/key in the source; the name when empty
    rules: Rules = Rules()
    date_format: str = ""  # how date/datetime values are written in the source, when not ISO


@dataclass(frozen=True)
class Source:
    """A staged input the engine can read: UTF-8 CSV, NDJSON or a JSON array.

    `line_column`: a column of the source that already holds each record's line number
    (staged Excel/SQL/JSON); otherwise the engine derives it (CSV: header is line 1)."""

    path: Path
    format: Literal["csv", "ndjson", "json"]
    delimiter: str = ""  # CSV; sniffed when empty
    header: bool = True
    line_column: str = ""
    estimated_rows: int = 0  # for progress; estimated from the file when 0


@dataclass
class SniffResult:
    columns: list[tuple[str, str]]  # (source column, inferred field type)
    delimiter: str = ""


@dataclass
class LoadResult:
    """What `load` wrote into a staging folder, with the quality numbers of the load."""

    read: int  # records read (valid + rejected)
    rows: int  # valid rows written
    rejected: int
    quality: dict[str, dict[str, float | int]]  # field → filled, invalid, completeness, validity
    reasons: dict[str, int]  # "field:rule" → rejected rows
    first_rejects: list[dict[str, Any]]  # up to 20: line, reasons, values (raw)
    source_columns: list[str]
    millis: int = 0


@dataclass
class Published:
    path: str  # relative to the data dir
    files: list[Path]
    bytes: int
    sha256: str


@dataclass(frozen=True)
class Filter:
    """`field op value`; `in` takes a list, `between` a [low, high] pair, `is null` no value."""

    field: str
    op: str
    value: Any = None


@dataclass(frozen=True)
class Sort:
    field: str
    descending: bool = False


@dataclass(frozen=True)
class QueryPlan:
    """A read-only query of one dataset version.

    `fields`: output columns in order (empty: every field). `masks`: field → mask kind
    (see MASKS) applied in SQL before rows leave the engine. Filters and sort see the raw
    values: a caller that must not let consumers probe masked values refuses filters on
    them. `q`: case-insensitive substring over `q_fields` (default: the output string fields,
    masked ones excluded)."""

    fields: Sequence[str] = ()
    filters: Sequence[Filter] = ()
    sort: Sequence[Sort] = ()
    limit: int = 100
    offset: int = 0
    masks: Mapping[str, str] = field(default_factory=dict)
    q: str = ""
    q_fields: Sequence[str] | None = None
    with_total: bool = True


@dataclass
class QueryResult:
    fields: list[str]
    types: list[str]  # field types (SQL_TYPES keys)
    rows: list[tuple[Any, ...]]
    total: int | None
    millis: int = 0

    def records(self) -> list[dict[str, Any]]:
        """Rows as JSON-ready dicts (dates ISO, decimals float)."""
        return [{f: jsonable(v) for f, v in zip(self.fields, row, strict=True)} for row in self.rows]


@dataclass(frozen=True)
class View:
    """A named, read-only view for `run_sql`: one dataset version's files, its visible fields
    (empty: all) and the masks applied inside the view."""

    files: Sequence[Path]
    fields: Sequence[str] = ()
    masks: Mapping[str, str] = field(default_factory=dict)


@dataclass
class SqlResult:
    columns: list[str]
    rows: list[tuple[Any, ...]]
    millis: int
    truncated: bool = False

    def records(self) -> list[dict[str, Any]]:
        return [{c: jsonable(v) for c, v in zip(self.columns, row, strict=True)} for row in self.rows]


# ---------------------------------------------------------------------------------------------
# SQL text helpers.
# ---------------------------------------------------------------------------------------------


def ident(name: str) -> str:
    """A quoted identifier: "name" with embedded quotes doubled."""
    return '"' + name.replace('"', '""') + '"'


def literal(value: str) -> str:
    """A quoted string literal, for the places DuckDB takes no parameter (paths, regexes)."""
    if "\x00" in value:
        raise ValueError("NUL in SQL literal")
    return "'" + value.replace("'", "''") + "'"


def is_identifier(name: str) -> bool:
    """Field names: lowercase letter first, then lowercase letters, digits, underscores."""
    return bool(_IDENT_RE.match(name))


def view_name(dataset: str) -> str:
    """The SQL name a dataset has in `run_sql`: its slug with hyphens as underscores."""
    return dataset.replace("-", "_")


def jsonable(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, bytes):
        return value.hex()
    return value


def _files_sql(files: Sequence[Path]) -> str:
    return "[" + ", ".join(literal(str(f)) for f in files) + "]"


def mask_sql(expr: str, kind: str, salt: str = "") -> str:
    """The SQL expression masking `expr` (already a column reference) with mask `kind`.

    id_number 110101199003071234 → 110101********1234; phone 13812345678 → 138****5678;
    name 张三 → 张*; partial keeps the first third; hash is a salted SHA-256 prefix (a stable
    pseudonym for joins). NULL stays NULL."""
    v = f"CAST({expr} AS VARCHAR)"
    n = f"length({v})"
    if kind == "id_number":
        return (
            f"CASE WHEN {n} > 10 THEN left({v}, 6) || repeat('*', {n} - 10) || right({v}, 4) "
            f"ELSE repeat('*', {n}) END"
        )
    if kind == "phone":
        return (
            f"CASE WHEN regexp_full_match({v}, '1\\d{{10}}') THEN left({v}, 3) || '****' || right({v}, 4) "
            f"ELSE repeat('*', greatest({n} - 4, 0)) || right({v}, 4) END"
        )
    if kind == "name":
        return f"left({v}, 1) || repeat('*', greatest({n} - 1, 0))"
    if kind == "partial":
        keep = f"CAST(ceil({n} / 3.0) AS BIGINT)"
        return f"left({v}, {keep}) || repeat('*', {n} - {keep})"
    if kind == "hash":
        return f"CASE WHEN {v} IS NULL THEN NULL ELSE left(sha256({literal(salt)} || {v}), 16) END"
    raise Invalid("Unknown mask {mask}.", mask=kind)


#: 17 digits whose date part has a month 01–12 and a day 01–31, then the check character.
ID_SHAPE = r"\d{6}(1[89]|20)\d{2}(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])\d{3}[\dXx]"


def id_value_sql(v: str, shape: str = "", number: str = "") -> str:
    """A well-shaped ID number as one BIGINT, 11 × its first 17 digits + its check value
    (X = 10); NULL otherwise. `shape` and `number` may name columns already holding
    `regexp_full_match(v, ID_SHAPE)` and `TRY_CAST(v AS BIGINT)` (each computed once)."""
    s = shape or f"regexp_full_match({v}, {literal(ID_SHAPE)})"
    n = number or f"TRY_CAST({v} AS BIGINT)"
    # An ID ending in a digit is the number n = 10 p + c, and 11 p + c = n + n // 10.
    return f"CASE WHEN {s} THEN coalesce({n} + {n} // 10, CAST(left({v}, 17) AS BIGINT) * 11 + 10) END"


def id_number_sql(v: str, value: str = "") -> str:
    """TRUE when the VARCHAR expression `v` is a valid 18-digit 身份证号 (GB 11643-1999):
    17 digits, a real birth date at 7–14, and the check character: the weighted digit sum
    (weights 7,9,10,5,8,4,2,1,6,3,7,9,10,5,8,4,2) plus the check value (X = 10) is 1 mod 11,
    which is the same as looking the sum up in "10X98765432". `value` may name a column
    holding `id_value_sql(v)` (computed once).

    Integer arithmetic on that value h = 11 p + c, with few operations, since each costs
    about as much per row as the rest of a load's casts: with r_j = p // 10^j = h // (11·10^j),
    digit j (from the right) of p is r_j − 10 r_(j+1), and its weight 2^(j+1) mod 11; summed,
    the weighted sum is 2 r_0 − 8 Σ 2^j r_j, so sum + c ≡ 2 r_0 + Σ (3·2^j mod 11) r_j + h
    (mod 11): 17 divisions instead of 17 digit extractions. The calendar reads month and day
    (mmdd) at once; the shape already bounds month (01–12) and day (01–31)."""
    h = value or f"({id_value_sql(v)})"

    def r(j: int) -> str:
        return f"({h} // {11 * 10**j})"

    def term(k: int, r_sum: str) -> str:
        return r_sum if k == 1 else f"{k} * {r_sum}"

    # 2^10 ≡ 1 (mod 11): r_j and r_(j+10) share a factor, so they are added first.
    pairs = [term(3 * 2**j % 11, f"({r(j)} + {r(j + 10)})") for j in range(1, 7)]
    total = " + ".join([f"2 * {r(0)}", *pairs, *(term(3 * 2**j % 11, r(j)) for j in range(7, 11)), h])
    mmdd, year = f"({r(3)} % 10000)", f"({r(7)} % 10000)"
    leap = f"({year} % 4 = 0 AND ({year} % 100 <> 0 OR {year} % 400 = 0))"
    real_date = f"CASE WHEN {mmdd} = 229 THEN {leap} ELSE {mmdd} NOT IN (230, 231, 431, 631, 931, 1131) END"
    return f"({h} IS NOT NULL AND {real_date} AND ({total}) % 11 = 1)"


def id_number_valid(value: str) -> bool:
    """The same check in Python (for tests and single values)."""
    if not re.fullmatch(r"\d{17}[\dXx]", value):
        return False
    try:
        datetime.strptime(value[6:14], "%Y%m%d")
    except ValueError:
        return False
    total = sum(w * int(d) for w, d in zip(ID_WEIGHTS, value[:17], strict=True))
    return ID_CHECK[total % 11] == value[17].upper()


def _typed_sql(raw: str, col: ColumnSpec) -> str:
    """The raw VARCHAR value cast to the column's type; NULL where it does not cast."""
    t = col.type
    if t == "string":
        return raw
    if t == "boolean":
        low = f"lower(trim({raw}))"
        return (
            f"CASE WHEN {low} IN ({', '.join(map(literal, BOOL_TRUE))}) THEN TRUE "
            f"WHEN {low} IN ({', '.join(map(literal, BOOL_FALSE))}) THEN FALSE END"
        )
    if t in ("date", "datetime") and col.date_format:
        parsed = f"try_strptime(trim({raw}), {literal(col.date_format)})"
        return f"CAST({parsed} AS DATE)" if t == "date" else parsed
    return f"TRY_CAST({raw} AS {SQL_TYPES[t]})"  # DuckDB casts tolerate surrounding spaces


def _bound_literal(col: ColumnSpec, value: float | str) -> str:
    if col.type in ("date", "datetime"):
        return f"CAST({literal(str(value))} AS {SQL_TYPES[col.type]})"
    return repr(float(value))


def _checks(col: ColumnSpec, raw: str, typed: str, id_value: str = "") -> list[tuple[str, str]]:
    """(rule code, SQL that is TRUE when the value passes) for one column; `typed` names the
    column's typed value, `id_value` its `id_value_sql` helper column."""
    r = col.rules
    tests: list[tuple[str, str]] = []
    if col.type != "string":
        tests.append(("type", f"{typed} IS NOT NULL"))
    if r.regex:
        tests.append(("regex", f"regexp_full_match({raw}, {literal(r.regex)})"))
    target = typed if col.type != "string" else f"length({raw})"
    # A value that is not of the type fails "type" only, not the range as well.
    if r.min is not None:
        tests.append(("min", f"({target} IS NULL OR {target} >= {_bound_literal(col, r.min)})"))
    if r.max is not None:
        tests.append(("max", f"({target} IS NULL OR {target} <= {_bound_literal(col, r.max)})"))
    if r.date_format:
        tests.append(("date", f"try_strptime({raw}, {literal(r.date_format)}) IS NOT NULL"))
    if r.id_number:
        tests.append(("id_number", id_number_sql(raw, id_value)))
    if r.mobile:
        tests.append(("mobile", f"regexp_full_match({raw}, {literal(MOBILE_RE)})"))
    # An empty value passes every rule but not_null; a rule that cannot be evaluated fails.
    out = [(code, f"({raw} IS NULL OR coalesce({test}, FALSE))") for code, test in tests]
    if r.not_null:
        out.insert(0, ("not_null", f"({raw} IS NOT NULL AND {raw} <> '')"))
    return out


# ---------------------------------------------------------------------------------------------
# The engine.
# ---------------------------------------------------------------------------------------------


def _sha256_files(files: Sequence[Path]) -> str:
    h = hashlib.sha256()
    for f in files:
        with f.open("rb") as fp:
            while chunk := fp.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    return _sha256_files([path])


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _error_text(exc: Exception, data_dir: Path) -> str:
    """DuckDB's message, first line, without local paths."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return first.replace(str(data_dir.resolve()), "").replace(str(data_dir), "")


#: Rejects a parallel CSV load takes before it gives up for the one-pass load: at least this
#: many, or a tenth of the file's rows. Each costs a few µs of Python (written to disk, then
#: found by its text) besides its share of the reject report; at ≈ 5 % rejects a load costs
#: as much CPU as the one-pass load, which keeps any number of rejects in SQL, and at a tenth
#: it is still faster in wall time while it has two cores.
_PARALLEL_REJECT_LIMIT = 200_000
_PARALLEL_REJECT_SHARE = 10


class _CheckPlan:
    """The SQL of a load's checks: raw text → typed values and helper columns → one flag per
    rule (after the ID helpers they need) → `_ok`; layers so each cast is computed once."""

    def __init__(
        self,
        engine: Engine,
        source: Source,
        columns: Sequence[ColumnSpec],
        header: Sequence[str],
        cluster_by: Sequence[str],
    ) -> None:
        self.source, self.columns, self.header = source, list(columns), list(header)
        raw_names = [c.source or c.name for c in columns]
        self.reader = engine._reader_sql(
            source, columns=[*raw_names, *([source.line_column] if source.line_column else [])]
        )
        # CSV gives NULL for an empty field already; JSON may hold "" — make it NULL too.
        blank = source.format != "csv"
        self.select_raw = ", ".join(
            (f"NULLIF({ident(r)}, '')" if blank else ident(r)) + f" AS {ident(f'_r{i}')}"
            for i, r in enumerate(raw_names)
        )
        #: Every column of the file, in its order (a reject's line is rebuilt from them).
        self.select_fields = ", ".join(f"{ident(h)} AS {ident(f'_f{j}')}" for j, h in enumerate(header))
        self.line_expr = (
            f"CAST({ident(source.line_column)} AS BIGINT)"
            if source.line_column
            else ("ordinality + 1" if source.format == "csv" and source.header else "ordinality")
        )
        self.typed_cols: list[str] = []
        self.helpers: list[str] = []  # computed from typed_cols, used by the flags
        self.flags: list[str] = []
        reasons: list[str] = []
        for i, col in enumerate(columns):
            raw = ident(f"_r{i}")
            self.typed_cols.append(f"{_typed_sql(raw, col)} AS {ident(col.name)}")
            if col.rules.id_number:
                shape, number = ident(f"_ids{i}"), ident(f"_idn{i}")
                self.typed_cols.append(f"regexp_full_match({raw}, {literal(ID_SHAPE)}) AS {shape}")
                self.typed_cols.append(f"TRY_CAST({raw} AS BIGINT) AS {number}")
                self.helpers.append(f"{id_value_sql(raw, shape, number)} AS {ident(f'_id{i}')}")
            for code, ok in _checks(col, raw, ident(col.name), ident(f"_id{i}")):
                flag = ident(f"_ok{len(self.flags)}")
                self.flags.append(f"{ok} AS {flag}")
                reasons.append(f"CASE WHEN NOT {flag} THEN {literal(col.name + ':' + code)} END")
        self.all_ok = " AND ".join(ident(f"_ok{k}") for k in range(len(self.flags))) or "TRUE"
        self.reason_text = f"concat_ws('|', {', '.join(reasons)})" if reasons else "''"
        self.raw_json = (
            "to_json(struct_pack("
            + ", ".join(f"{ident(c.name)} := {ident(f'_r{i}')}" for i, c in enumerate(columns))
            + "))"
        )
        self._source_index = [self.header.index(r) for r in raw_names]
        # Only the valid rows' order matters; rejects are ordered by line when collected.
        self.order = (
            " ORDER BY " + ", ".join(f"{ident(c)} NULLS LAST" for c in cluster_by) if cluster_by else ""
        )
        self.names = ", ".join(ident(c.name) for c in columns)
        self.raws = ", ".join(ident(f"_r{i}") for i in range(len(columns)))

    def raw_json_of(self, field_expr: Callable[[int], str]) -> str:
        """`_raw` built from the file's columns: `field_expr(j)` is column j's raw text."""
        return (
            "to_json(struct_pack("
            + ", ".join(
                f"{ident(c.name)} := {field_expr(j)}"
                for c, j in zip(self.columns, self._source_index, strict=True)
            )
            + "))"
        )

    def checked(self, *, numbered: bool, reader: str = "", keep: str = "") -> str:
        """Rows with `_ok` and their raw columns; `numbered`: with `_line` (one thread).
        `reader`: a relation of the file's columns as text to read instead of the file, and
        `keep`: a column of it passed through (the fast load's rows to settle)."""
        typed = ", ".join(self.typed_cols)
        if reader:
            fields = ", ".join(ident(f"_f{j}") for j in range(len(self.header)))
            inner = (
                f"SELECT {ident(keep)}, {self.raws}, {fields}, {typed} FROM ("
                f"SELECT {ident(keep)}, {self.select_raw}, {self.select_fields} FROM {reader})"
            )
        elif numbered:
            inner = (
                f"SELECT _line, {self.raws}, {typed} FROM ("
                f"SELECT {self.line_expr} AS _line, {self.select_raw} FROM {self.reader} WITH ORDINALITY)"
            )
        else:
            fields = ", ".join(ident(f"_f{j}") for j in range(len(self.header)))
            inner = (
                f"SELECT {self.raws}, {fields}, {typed} FROM ("
                f"SELECT {self.select_raw}, {self.select_fields} FROM {self.reader})"
            )
        flags = "".join(", " + f for f in self.flags)
        if self.helpers:
            inner = f"SELECT *, {', '.join(self.helpers)} FROM ({inner})"
        return f"SELECT *, ({self.all_ok}) AS _ok FROM (SELECT *{flags} FROM ({inner}))"


class _RejectCollector:
    """Called by DuckDB (from any of its threads) once per rejected record of a parallel
    load, with the record built in SQL: as JSON ({"r": reasons, "v": fields}), appended as
    {"t": thread, "j": that} to an NDJSON listing, and as its fields joined by the delimiter
    (the record's line, in a file without quotes), appended to a second file. Python converts
    nothing per reject, which keeps it at ≈ 1 µs (the GIL is held meanwhile). Fails the query
    past `limit`."""

    def __init__(self, path: Path, limit: int) -> None:
        self.path, self.limit = path, limit
        self.texts_path = path.with_suffix(".txt")
        self.count = 0
        self.overflow = False
        self._lock = threading.Lock()
        self._out = path.open("w", encoding="utf-8")
        self._texts = self.texts_path.open("w", encoding="utf-8", newline="")

    def __call__(self, record: str, text: str) -> bool:
        with self._lock:
            if self.count >= self.limit:
                self.overflow = True
                raise RuntimeError("too many rejects for a parallel load")
            self.count += 1
            thread = threading.get_ident()
            self._out.write(f'{{"t":{thread},"j":{record}}}\n')
            self._texts.write(f"{thread}\t{text}\n")
        return False

    def close(self) -> None:
        self._out.close()
        self._texts.close()

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
        self.texts_path.unlink(missing_ok=True)

    def texts(self) -> Iterator[tuple[int, bytes]]:
        """(thread, the record's line) of each reject, in the order they came; only right
        for a file without quote characters (a quoted field may hold a newline)."""
        with self.texts_path.open("rb") as fp:
            for line in fp:
                thread, _, text = line[:-1].partition(b"\t")
                yield int(thread), text


class Engine:
    """DuckDB, in-process. Thread-safe: every call opens its own cursor or connection.

    `threads` and `memory_limit` bound each load and query; `salt` keys the `hash` mask."""

    def __init__(
        self, data_dir: Path, *, salt: str = "", threads: int = 0, memory_limit: str = "2GB"
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.root = self.data_dir / "datasets"
        self.root.mkdir(parents=True, exist_ok=True)
        self.salt = salt
        self.threads = threads or max(os.cpu_count() or 1, 1)
        self.memory_limit = memory_limit
        self._reader: duckdb.DuckDBPyConnection | None = None
        self._lock = threading.Lock()

    # ---- connections --------------------------------------------------------------------

    def _reader_cursor(self) -> duckdb.DuckDBPyConnection:
        """A cursor on the shared read-only-by-configuration database: it may read Parquet
        under datasets/ and nothing else, and its settings cannot be changed."""
        with self._lock:
            if self._reader is None:
                con = duckdb.connect(":memory:")
                con.execute(f"SET threads = {int(self.threads)}")
                con.execute(f"SET memory_limit = {literal(self.memory_limit)}")
                con.execute("SET enable_progress_bar = false")
                con.execute("SET autoinstall_known_extensions = false")
                con.execute("SET autoload_known_extensions = false")
                con.execute("SET parquet_metadata_cache = true")
                con.execute(f"SET allowed_directories = [{literal(str(self.root) + '/')}]")
                con.execute("SET enable_external_access = false")
                con.execute("SET lock_configuration = true")
                self._reader = con
            return self._reader.cursor()

    def _writer(self) -> duckdb.DuckDBPyConnection:
        con = duckdb.connect(":memory:")
        tmp = self.data_dir / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        con.execute(f"SET threads = {int(self.threads)}")
        con.execute(f"SET memory_limit = {literal(self.memory_limit)}")
        con.execute(f"SET temp_directory = {literal(str(tmp))}")
        con.execute("SET autoinstall_known_extensions = false")
        con.execute("SET autoload_known_extensions = false")
        # Progress is read by a watcher thread; never printed.
        con.execute("SET enable_progress_bar = true")
        con.execute("SET enable_progress_bar_print = false")
        # Rows carry their line number, so the writer need not keep the file's order.
        con.execute("SET preserve_insertion_order = false")
        return con

    def close(self) -> None:
        with self._lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None

    # ---- writing -----------------------------------------------------------------------

    def dataset_dir(self, dataset: str) -> Path:
        if not _SLUG_RE.match(dataset):
            raise Invalid("A dataset name is lowercase letters, digits, hyphens and underscores.")
        return self.root / dataset

    def version_path(self, dataset: str, version: int) -> str:
        """Where version N of a dataset lives, relative to the data dir."""
        return str((self.dataset_dir(dataset) / f"v{int(version)}").relative_to(self.data_dir))

    def staging_dir(self, dataset: str) -> Path:
        """A fresh, empty folder for one load; `publish` renames it into place."""
        d = self.dataset_dir(dataset) / f".staging-{uuid.uuid4().hex}"
        d.mkdir(parents=True)
        return d

    def discard(self, staging: Path) -> None:
        shutil.rmtree(staging, ignore_errors=True)

    def check_regex(self, pattern: str) -> str | None:
        """None when DuckDB (RE2) accepts the pattern, else the reason."""
        con = duckdb.connect(":memory:")
        try:
            con.execute("SELECT regexp_full_match('', $1)", [pattern]).fetchall()
            return None
        except duckdb.Error as exc:
            return _error_text(exc, self.data_dir)
        finally:
            con.close()

    def sniff(self, source: Source) -> SniffResult:
        """Source columns and their inferred field types (DuckDB's sniffer for CSV)."""
        con = self._writer()
        try:
            rel = con.sql(f"SELECT * FROM {self._reader_sql(source, typed=True)} LIMIT 0")
            cols = [(name, _field_type(str(t))) for name, t in zip(rel.columns, rel.types, strict=True)]
            delimiter = source.delimiter
            if source.format == "csv" and not delimiter:
                delimiter = detect_delimiter(source.path)
            return SniffResult(columns=[c for c in cols if c[0] != source.line_column], delimiter=delimiter)
        except duckdb.Error as exc:
            raise Invalid(
                "The file could not be read: {reason}", reason=_error_text(exc, self.data_dir)
            ) from exc
        finally:
            con.close()

    def _reader_sql(self, source: Source, *, typed: bool = False, columns: Sequence[str] = ()) -> str:
        path = literal(str(source.path))
        if source.format == "csv":
            opts = ["header = true" if source.header else "header = false"]
            opts.append(f"delim = {literal(source.delimiter or detect_delimiter(source.path))}")
            opts.append("quote = '\"', escape = '\"'")  # RFC 4180
            # Malformed lines never abort or vanish: the load reads them from reject_errors.
            opts.append("all_varchar = true, store_rejects = true" if not typed else "ignore_errors = true")
            return f"read_csv({path}, {', '.join(opts)})"
        fmt = "newline_delimited" if source.format == "ndjson" else "array"
        if typed or not columns:
            return f"read_json({path}, format = {literal(fmt)})"
        cols = "{" + ", ".join(f"{literal(c)}: 'VARCHAR'" for c in columns) + "}"
        return f"read_json({path}, format = {literal(fmt)}, columns = {cols})"

    def load(
        self,
        source: Source,
        columns: Sequence[ColumnSpec],
        staging: Path,
        *,
        progress: Callable[[int], None] | None = None,
        cluster_by: Sequence[str] = (),
    ) -> LoadResult:
        """Read `source`, cast and check every column, and write into `staging`: valid rows
        as `data/*.parquet` (typed, in the file's order, with the hidden `_line`) and rejected
        rows as `rejected/*.parquet` (line, reason codes "field:rule", raw values), never dropped.

        `cluster_by`: columns the valid rows are sorted by as they are written, so each row
        group's min/max statistics cover a narrow range and filtered reads on them skip the
        rest (a 10M-row filtered read: ~7× faster). It costs the load a sort (about twice the
        write's CPU), so it is opt-in per dataset.

        A CSV file is read and checked on every thread (`_load_csv`); the line numbers of its
        rejects are found afterwards. Other sources (and a CSV whose parallel load gives up)
        take one pass that numbers records as it reads, on one thread.

        Malformed CSV lines (wrong column count, bad quoting) are rejected with reason
        "row:malformed". Raises Invalid when the file cannot be read at all or lacks a column;
        `progress(rows_read)` is called about twice a second."""
        started = time.monotonic()
        con = self._writer()
        try:
            header = self._source_columns(con, source)
            missing = [c.source or c.name for c in columns if (c.source or c.name) not in header]
            if missing:
                raise Invalid(
                    "The file has no column for {fields}. Its columns are: {found}.",
                    fields=", ".join(missing),
                    found=", ".join(header) or "-",
                )
            known = {c.name for c in columns}
            for c in cluster_by:
                if c not in known:
                    raise Invalid("Unknown field {field}.", field=c, error_code="unknown_field")
            plan = _CheckPlan(self, source, columns, header, cluster_by)
            if source.format == "csv" and source.header and not source.line_column and not cluster_by:
                result = self._load_arrow(con, plan, staging, progress, started)
                if result is not None:
                    return result
            if source.format == "csv" and not source.line_column and self.threads > 1:
                result = self._load_csv(con, plan, staging, progress, started)
                if result is not None:
                    return result
                con.close()
                con = self._writer()
                for leftover in (staging / "out", staging / "data", staging / "rejected"):
                    shutil.rmtree(leftover, ignore_errors=True)
            sql = f"""
COPY (
  SELECT CASE WHEN NOT _ok THEN _line END AS _line, {plan.names},
         CASE WHEN NOT _ok THEN {plan.reason_text} END AS _reasons,
         CASE WHEN NOT _ok THEN {plan.raw_json} END AS _raw,
         _ok
  FROM ({plan.checked(numbered=True)}){plan.order}
) TO {literal(str(staging / "out"))} (FORMAT parquet, PARTITION_BY (_ok), OVERWRITE_OR_IGNORE)
"""
            if cluster_by:
                # The writer keeps the ORDER BY only while insertion order is preserved.
                con.execute("SET preserve_insertion_order = true")
            self._run_copy(con, sql, source, progress)
            return self._collect(con, source, columns, staging, header, started)
        finally:
            con.close()

    def _run_copy(
        self,
        con: duckdb.DuckDBPyConnection,
        sql: str,
        source: Source,
        progress: Callable[[int], None] | None,
    ) -> None:
        watcher: _ProgressWatcher | None = None
        if progress:
            watcher = _ProgressWatcher(con, progress, source.estimated_rows or _estimate_rows(source))
            watcher.start()
        try:
            con.execute(sql)
        except duckdb.Error as exc:
            raise Invalid(
                "The file could not be read: {reason}", reason=_error_text(exc, self.data_dir)
            ) from exc
        finally:
            if watcher:
                watcher.stop()

    def _load_arrow(
        self,
        con: duckdb.DuckDBPyConnection,
        plan: _CheckPlan,
        staging: Path,
        progress: Callable[[int], None] | None,
        started: float,
    ) -> LoadResult | None:
        """The fast load of a plain CSV file (`arrowcsv`): Arrow reads and casts, vectorised
        checks pass or fail the values in canonical form, the SQL rules judge the rows with a
        value written another way (per batch, on this connection) and explain the failed rows
        (one pass at the end). None when the file is not one Arrow reads exactly as DuckDB
        does, or a check disagrees with the SQL rules; nothing is left behind then."""
        import pyarrow as pa

        from civicgrid.data import arrowcsv  # it reads the rules' constants from this module

        source = plan.source
        delimiter = source.delimiter or detect_delimiter(source.path)
        if not arrowcsv.readable(source.path, plan.header, delimiter, plan.columns):
            return None

        def judged(reader: str) -> str:
            return (
                f"SELECT _i, _ok, {plan.names}, CASE WHEN NOT _ok THEN {plan.reason_text} END AS _reasons, "
                f"CASE WHEN NOT _ok THEN {plan.raw_json} END AS _raw "
                f"FROM ({plan.checked(numbered=False, reader=reader, keep='_i')})"
            )

        def check(table: pa.Table) -> pa.Table:
            con.register("_batch", table)
            try:
                return con.sql(judged("_batch")).to_arrow_table()
            finally:
                con.unregister("_batch")

        try:
            loaded = arrowcsv.load(
                source.path,
                plan.header,
                delimiter,
                plan.columns,
                staging,
                check,
                progress,
                threads=self.threads,
            )
            if loaded.failed:
                # The rows the vectorised rules failed, explained by the SQL rules: streamed from
                # the files they were set aside in (a file of rejects needs no memory for them).
                failed = f"({judged(f'read_parquet({_files_sql(loaded.failed)})')})"
                if self._scalar(con, f"SELECT count(*) FROM {failed} WHERE _ok"):
                    raise arrowcsv.GiveUp("the vectorised rules and the SQL rules disagree")
                con.execute(
                    f"COPY (SELECT _i AS _line, _reasons, CAST(_raw AS VARCHAR) AS _raw FROM {failed}) "
                    f"TO {literal(str(staging / 'out' / '_ok=false' / 'failed.parquet'))} (FORMAT parquet)"
                )
        except (arrowcsv.GiveUp, pa.ArrowInvalid) as exc:
            log.warning("the fast CSV load gave up (%s); the SQL load reads the file", exc)
            for leftover in ("out", "failed"):
                shutil.rmtree(staging / leftover, ignore_errors=True)
            return None
        shutil.rmtree(staging / "failed", ignore_errors=True)
        return self._collect(con, source, plan.columns, staging, plan.header, started, final_lines=True)

    def _load_csv(
        self,
        con: duckdb.DuckDBPyConnection,
        plan: _CheckPlan,
        staging: Path,
        progress: Callable[[int], None] | None,
        started: float,
    ) -> LoadResult | None:
        """The parallel load of a CSV file; None when it gives up (the caller then takes the
        one-pass, one-thread load, which handles everything).

        Pass 1 reads and checks on every thread, without record numbers, and writes the valid
        rows in the file's order; each rejected record goes to `_RejectCollector` (a Python
        function DuckDB calls from the filter for failing rows only). Then the rejects' lines:
        in a file without quote characters a record is a line, so each reject is found by its
        text (`_find_lines`, byte search); otherwise, or when a line is malformed, a second
        read numbers records on one thread (`_number_rejects`), reading only, which is much
        cheaper than checking and writing on one thread."""
        source = plan.source
        rows_estimate = source.estimated_rows or _estimate_rows(source)
        listing = staging / "rejects.ndjson"
        collector = _RejectCollector(
            listing, limit=max(_PARALLEL_REJECT_LIMIT, rows_estimate // _PARALLEL_REJECT_SHARE)
        )
        con.create_function(
            "cg_reject",
            collector,
            ["VARCHAR", "VARCHAR"],
            "BOOLEAN",
            null_handling=duckdb.func.SPECIAL,
            side_effects=True,
        )
        fields = ", ".join(ident(f"_f{j}") for j in range(len(plan.header)))
        # concat reads NULL as '', which is what an empty CSV field was.
        delim = literal(source.delimiter or detect_delimiter(source.path))
        line = f", {delim}, ".join(ident(f"_f{j}") for j in range(len(plan.header)))
        valid_dir = staging / "out" / "_ok=true"
        valid_dir.mkdir(parents=True)
        # The filter calls cg_reject only for rows that fail (`_ok` is never NULL), and a
        # volatile function keeps the checks from being pushed into the reader.
        sql = f"""
COPY (
  SELECT CAST(NULL AS BIGINT) AS _line, {plan.names}, CAST(NULL AS VARCHAR) AS _reasons,
         CAST(NULL AS JSON) AS _raw
  FROM ({plan.checked(numbered=False)})
  WHERE _ok OR cg_reject(CAST(to_json(struct_pack(r := {plan.reason_text}, v := [{fields}])) AS VARCHAR),
                         concat({line})){plan.order}
) TO {literal(str(valid_dir / "data_0.parquet"))} (FORMAT parquet)
"""
        con.execute("SET preserve_insertion_order = true")  # the file's order, on every thread
        try:
            self._run_copy(con, sql, source, progress)
        except Invalid:
            if collector.overflow:
                collector.remove()
                return None  # too many rejects: the one-pass load is faster
            raise
        finally:
            collector.close()
        malformed = 0
        with contextlib.suppress(duckdb.Error):
            malformed = self._scalar(con, "SELECT count(*) FROM reject_errors")
        if not collector.count and not malformed:
            collector.remove()
            return self._collect(con, source, plan.columns, staging, plan.header, started)
        rej_dir = staging / "out" / "_ok=false"
        rej_dir.mkdir(parents=True)
        lines = None if malformed else _find_lines(source, plan.header, collector.texts())
        listing_sql = (
            f"read_json({literal(str(listing))}, format = 'newline_delimited', "
            "columns = {'t': 'UBIGINT', 'j': 'STRUCT(r VARCHAR, v VARCHAR[])'})"
        )
        if lines:
            # The k-th line number belongs to the k-th reject of the listing.
            numbers = staging / "reject-lines.csv"
            numbers.write_text("".join(f"{n}\n" for n in lines))
            raw_json = plan.raw_json_of(lambda j: f"j.v[{j + 1}]")
            con.execute(
                f"COPY (SELECT n.l AS _line, j.r AS _reasons, {raw_json} AS _raw "
                f"FROM (SELECT ordinality AS k, j.r AS r, j.v AS v FROM {listing_sql} WITH ORDINALITY) j "
                f"JOIN (SELECT ordinality AS k, l FROM read_csv({literal(str(numbers))}, header = false, "
                "columns = {'l': 'BIGINT'}) WITH ORDINALITY) n USING (k)) "
                f"TO {literal(str(rej_dir / 'data_0.parquet'))} (FORMAT parquet)"
            )
            result = self._collect(con, source, plan.columns, staging, plan.header, started, final_lines=True)
            collector.remove()
            numbers.unlink()
            return result
        # A second connection: its reader's reject_errors number malformed records as the
        # one-pass load's do (one thread, by record).
        con2 = self._writer()
        try:
            con2.execute(
                f"CREATE TEMP TABLE _listing AS SELECT DISTINCT j.r AS r, j.v AS v FROM {listing_sql}"
            )
            on = " AND ".join(
                f"f.{ident(f'_f{j}')} IS NOT DISTINCT FROM j.v[{j + 1}]" for j in range(len(plan.header))
            )
            file_raw = plan.raw_json_of(lambda j: f"f.{ident(f'_f{j}')}")
            reader = self._reader_sql(source, columns=plan.header)
            sql = f"""
COPY (
  SELECT f._line, j.r AS _reasons, {file_raw} AS _raw
  FROM (SELECT {plan.line_expr} AS _line, {plan.select_fields} FROM {reader} WITH ORDINALITY) f
  JOIN _listing j ON {on}
) TO {literal(str(rej_dir / "data_0.parquet"))} (FORMAT parquet)
"""
            self._run_copy(con2, sql, source, None)
            collector.remove()
            return self._collect(con2, source, plan.columns, staging, plan.header, started)
        finally:
            con2.close()

    def _source_columns(self, con: duckdb.DuckDBPyConnection, source: Source) -> list[str]:
        try:
            rel = con.sql(f"SELECT * FROM {self._reader_sql(source, typed=True)} LIMIT 0")
        except duckdb.Error as exc:
            raise Invalid(
                "The file could not be read: {reason}", reason=_error_text(exc, self.data_dir)
            ) from exc
        return [c for c in rel.columns if c != source.line_column]

    def _collect(
        self,
        con: duckdb.DuckDBPyConnection,
        source: Source,
        columns: Sequence[ColumnSpec],
        staging: Path,
        header: list[str],
        started: float,
        final_lines: bool = False,
    ) -> LoadResult:
        """Move the partitions into data/, write rejected/ (rule rejects and malformed lines,
        by line of the file) and count quality — all by queries, whatever the number of rejects.
        `final_lines`: the rejects' `_line` are lines of the file already, not record numbers."""
        out = staging / "out"
        data_dir, rej_dir = staging / "data", staging / "rejected"
        data_dir.mkdir(exist_ok=True)
        rej_dir.mkdir(exist_ok=True)
        for i, f in enumerate(sorted((out / "_ok=true").glob("*.parquet"))):
            f.rename(data_dir / f"part-{i:05d}.parquet")
        files = sorted(data_dir.glob("*.parquet"))
        valid = self._count(con, files) if files else 0
        names = [c.name for c in columns]
        rejected_files = sorted((out / "_ok=false").glob("*.parquet"))
        # Rule rejects: `_rec` is the reader's record number (CSV: counting the header, not
        # counting malformed records, which the reader skipped).
        values = ", ".join(f"json_extract_string(_raw, {literal('$.' + n)}) AS {ident(n)}" for n in names)
        if rejected_files:
            con.execute(
                f"CREATE OR REPLACE TEMP TABLE _rule_rejects AS SELECT _line AS _rec, "
                f"string_split(_reasons, '|') AS _reasons{', ' + values if values else ''} "
                f"FROM read_parquet({_files_sql(rejected_files)})"
            )
        else:
            typed = "".join(f", CAST(NULL AS VARCHAR) AS {ident(n)}" for n in names)
            con.execute(
                "CREATE OR REPLACE TEMP TABLE _rule_rejects AS SELECT CAST(NULL AS BIGINT) AS _rec, "
                f"CAST(NULL AS VARCHAR[]) AS _reasons{typed} WHERE FALSE"
            )
        # Malformed CSV records (wrong column count, bad quoting), once per record: DuckDB
        # numbers them by record (header = 1) and lists each problem of a record.
        con.execute("CREATE OR REPLACE TEMP TABLE _malformed (_rec BIGINT, _raw VARCHAR, _error VARCHAR)")
        if source.format == "csv":
            with contextlib.suppress(duckdb.Error):
                con.execute(
                    "INSERT INTO _malformed SELECT line, left(arg_min(csv_line, byte_position), 2000), "
                    "left(arg_min(error_message, byte_position), 300) FROM reject_errors GROUP BY line"
                )
        shift = source.format == "csv" and not source.line_column and not final_lines
        if shift:
            # The k-th record the reader passed on is record k plus the malformed records
            # before it: an ASOF join on each malformed record's threshold (its number less
            # the malformed records before it) counts them.
            con.execute(
                "CREATE OR REPLACE TEMP TABLE _skips AS SELECT t, max(j) AS j FROM ("
                "SELECT _rec - row_number() OVER (ORDER BY _rec) + 1 AS t, "
                "row_number() OVER (ORDER BY _rec) AS j FROM _malformed) GROUP BY t"
            )
            rule_rec = "r._rec + coalesce(s.j, 0)"
            rule_from = "_rule_rejects r ASOF LEFT JOIN _skips s ON r._rec >= s.t"
        else:
            rule_rec, rule_from = "r._rec", "_rule_rejects r"
        cols = "".join(f", r.{ident(n)}" for n in names)
        nulls = "".join(f", CAST(NULL AS VARCHAR) AS {ident(n)}" for n in names)
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE _rejects AS "
            f"SELECT {rule_rec} AS _rec, r._reasons{cols}, CAST(NULL AS VARCHAR) AS _raw, "
            f"CAST(NULL AS VARCHAR) AS _error FROM {rule_from} "
            f"UNION ALL SELECT _rec, ['row:malformed']{nulls}, _raw, _error FROM _malformed"
        )
        rejected = self._scalar(con, "SELECT count(*) FROM _rejects")
        line, lines_join = "_rec", ""
        if shift and rejected:
            # Records → lines of the file: the same unless a record spans lines (a quoted
            # newline) or blank lines were skipped; only then the lines are looked up.
            line_map = _LineMap(source, valid + rejected)
            if not line_map.simple:
                recs = [int(r[0]) for r in con.execute("SELECT _rec FROM _rejects").fetchall()]
                con.execute("CREATE OR REPLACE TEMP TABLE _lines (_rec BIGINT, _line BIGINT)")
                con.executemany("INSERT INTO _lines VALUES (?, ?)", [(r, line_map.line(r)) for r in recs])
                line, lines_join = "coalesce(_lines._line, _rec)", " LEFT JOIN _lines USING (_rec)"
        outputs = "".join(f", {ident(n)}" for n in names)
        con.execute(
            f"COPY (SELECT {line} AS _line, _reasons{outputs}, _raw, _error FROM _rejects{lines_join} "
            f"ORDER BY _line) TO {literal(str(rej_dir / 'rejected.parquet'))} (FORMAT parquet)"
        )
        shutil.rmtree(out, ignore_errors=True)
        quality = self._quality(con, rej_dir / "rejected.parquet", files, names, valid, rejected)
        return LoadResult(
            read=valid + rejected,
            rows=valid,
            rejected=rejected,
            **quality,
            source_columns=header,
            millis=int((time.monotonic() - started) * 1000),
        )

    def _quality(
        self,
        con: duckdb.DuckDBPyConnection,
        rejects: Path,
        files: Sequence[Path],
        names: Sequence[str],
        valid: int,
        rejected: int,
    ) -> dict[str, Any]:
        """Per-field completeness and validity, reasons counted, the first 20 rejects."""
        read = valid + rejected
        src = f"read_parquet({literal(str(rejects))})"
        nulls = self._null_counts(con, files, names) if files else dict.fromkeys(names, 0)
        filled_rej: dict[str, int] = dict.fromkeys(names, 0)
        invalid: dict[str, int] = dict.fromkeys(names, 0)
        if rejected and names:
            # A malformed line counts as empty; a field is invalid where a reason names it.
            names_it = "len(list_filter(_reasons, lambda c: starts_with(c, {}))) > 0"
            exprs = ", ".join(
                f"count({ident(n)}) FILTER (WHERE {ident(n)} <> ''), "
                f"count(*) FILTER (WHERE {names_it.format(literal(n + ':'))})"
                for n in names
            )
            row = con.execute(f"SELECT {exprs} FROM {src}").fetchone() or ()
            for i, n in enumerate(names):
                filled_rej[n], invalid[n] = int(row[2 * i]), int(row[2 * i + 1])
        reasons = {
            str(code): int(n)
            for code, n in con.execute(
                f"SELECT code, count(*) FROM (SELECT unnest(_reasons) AS code FROM {src}) "
                "GROUP BY code ORDER BY code"
            ).fetchall()
        }
        quality: dict[str, dict[str, float | int]] = {}
        for n in names:
            filled = valid - nulls.get(n, 0) + filled_rej[n]
            quality[n] = {
                "filled": filled,
                "invalid": invalid[n],
                "completeness": round(filled / read, 6) if read else 0.0,
                "validity": round((read - invalid[n]) / read, 6) if read else 0.0,
            }
        first: list[dict[str, Any]] = []
        cur = con.execute(f"SELECT * FROM {src} ORDER BY _line LIMIT 20")
        cols = [d[0] for d in cur.description or ()]
        for rec in cur.fetchall():
            r = dict(zip(cols, rec, strict=True))
            reason_list = [str(c) for c in r["_reasons"]]
            vals = (
                {"_raw": r["_raw"], "_error": r["_error"]}
                if "row:malformed" in reason_list
                else {n: r[n] for n in names}
            )
            first.append({"line": int(r["_line"]), "reasons": reason_list, "values": vals})
        return {"quality": quality, "reasons": reasons, "first_rejects": first}

    def _scalar(self, con: duckdb.DuckDBPyConnection, sql: str) -> int:
        row = con.execute(sql).fetchone()
        return int(row[0]) if row else 0

    def _count(self, con: duckdb.DuckDBPyConnection, files: Sequence[Path]) -> int:
        row = con.execute(f"SELECT count(*) FROM read_parquet({_files_sql(files)})").fetchone()
        return int(row[0]) if row else 0

    def _null_counts(
        self, con: duckdb.DuckDBPyConnection, files: Sequence[Path], names: Sequence[str]
    ) -> dict[str, int]:
        """NULLs per column from the Parquet footers (no data scan); a scan if stats are absent."""
        try:
            rows = con.execute(
                f"SELECT path_in_schema, sum(stats_null_count), count(*) FILTER (stats_null_count IS NULL) "
                f"FROM parquet_metadata({_files_sql(files)}) GROUP BY 1"
            ).fetchall()
            stats = {str(p): int(n or 0) for p, n, missing in rows if not missing}
            if all(n in stats for n in names):
                return {n: stats[n] for n in names}
        except duckdb.Error:
            pass
        exprs = ", ".join(f"count(*) - count({ident(n)})" for n in names)
        row = con.execute(f"SELECT {exprs} FROM read_parquet({_files_sql(files)})").fetchone()
        return {n: int(v) for n, v in zip(names, row or (), strict=False)}

    def publish(self, staging: Path, dataset: str, version: int, previous: Sequence[Path] = ()) -> Published:
        """Make a staged load a version: `previous` files (append mode) are hard-linked in
        beside the new part (no copy; each version folder is complete on its own, so removing
        an old version never touches a newer one), everything is fsynced, and the folder is
        renamed to v<N> in one step. Until the caller commits the pointer, readers keep the
        previous version."""
        data = staging / "data"
        files = sorted(data.glob("*.parquet"))
        renamed: list[Path] = []
        for i, f in enumerate(files):
            target = data / f"part-v{version:05d}-{i:05d}.parquet"
            f.rename(target)
            renamed.append(target)
        for f in previous:
            target = data / f.name
            if target.exists():
                continue
            try:
                os.link(f, target)
            except OSError:
                shutil.copy2(f, target)  # another file system: copy instead
        for f in [*sorted(data.glob("*.parquet")), *sorted((staging / "rejected").glob("*"))]:
            with f.open("rb") as fp:
                os.fsync(fp.fileno())
        _fsync_dir(data)
        final = self.data_dir / self.version_path(dataset, version)
        if final.exists():
            # A leftover of a load that died after its rename but before its commit.
            shutil.rmtree(final)
        staging.rename(final)
        _fsync_dir(final.parent)
        out = sorted((final / "data").glob("*.parquet"))
        return Published(
            path=str(final.relative_to(self.data_dir)),
            files=out,
            bytes=sum(f.stat().st_size for f in out),
            sha256=_sha256_files(out),
        )

    def version_files(self, path: str) -> list[Path]:
        """The data files of a version folder (relative to the data dir), in name order."""
        if not path:
            return []
        folder = (self.data_dir / path / "data").resolve()
        if self.root not in folder.parents:
            return []
        return sorted(folder.glob("*.parquet"))

    def rejected_files(self, path: str) -> list[Path]:
        folder = (self.data_dir / path / "rejected").resolve()
        if not path or self.root not in folder.parents:
            return []
        return sorted(folder.glob("*.parquet"))

    def remove_version(self, path: str) -> list[dict[str, Any]]:
        """Delete a version folder; returns [{"file", "bytes", "sha256"}] of what was removed."""
        folder = (self.data_dir / path).resolve()
        if not path or self.root not in folder.parents or not folder.is_dir():
            return []
        removed = [
            {"file": str(f.relative_to(self.data_dir)), "bytes": f.stat().st_size, "sha256": file_sha256(f)}
            for f in sorted(folder.rglob("*"))
            if f.is_file()
        ]
        shutil.rmtree(folder)
        _fsync_dir(folder.parent)
        return removed

    # ---- reading -----------------------------------------------------------------------

    def schema(self, files: Sequence[Path]) -> dict[str, str]:
        """Visible columns of a version → field type."""
        if not files:
            return {}
        cur = self._reader_cursor()
        try:
            rel = cur.sql(f"SELECT * FROM read_parquet({_files_sql(files)}) LIMIT 0")
            return {
                n: _field_type(str(t))
                for n, t in zip(rel.columns, rel.types, strict=True)
                if not n.startswith(HIDDEN_PREFIX)
            }
        finally:
            cur.close()

    def count(self, files: Sequence[Path]) -> int:
        if not files:
            return 0
        cur = self._reader_cursor()
        try:
            return self._count(cur, files)
        finally:
            cur.close()

    def read_rejected(self, path: str, *, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
        """Rejected rows of a load (raw values: personal data — callers check the right)."""
        files = self.rejected_files(path)
        if not files:
            return []
        cur = self._reader_cursor()
        try:
            rel = cur.execute(
                f"SELECT * FROM read_parquet({_files_sql(files)}) ORDER BY _line LIMIT $1 OFFSET $2",
                [limit, offset],
            )
            cols = [d[0] for d in rel.description or ()]
            return [
                {c: jsonable(v) for c, v in zip(cols, row, strict=True) if v is not None}
                for row in rel.fetchall()
            ]
        finally:
            cur.close()

    def query(self, files: Sequence[Path], plan: QueryPlan) -> QueryResult:
        """Run `plan` against a version's files. Unknown fields, operators or masks → Invalid.
        With no files (nothing loaded yet) the result is empty."""
        started = time.monotonic()
        if not files:
            return QueryResult(list(plan.fields), [], [], 0 if plan.with_total else None)
        schema = self.schema(files)
        fields = list(plan.fields) or list(schema)
        for f in [*fields, *(x.field for x in plan.filters), *(s.field for s in plan.sort)]:
            if f not in schema:
                raise Invalid("Unknown field {field}.", field=f, error_code="unknown_field")
        for kind in plan.masks.values():
            if kind and kind not in MASKS:
                raise Invalid("Unknown mask {mask}.", mask=kind)
        limit = max(0, min(int(plan.limit), 100_000))
        offset = max(0, int(plan.offset))
        where, params = self._where(schema, plan)
        select = ", ".join(
            (mask_sql(ident(f), plan.masks[f], self.salt) if plan.masks.get(f) else ident(f))
            + f" AS {ident(f)}"
            for f in fields
        )
        order = ", ".join(
            f"{ident(s.field)} {'DESC' if s.descending else 'ASC'} NULLS LAST" for s in plan.sort
        )
        src = f"read_parquet({_files_sql(files)})"
        order_by = f" ORDER BY {order}" if order else ""
        sql = f"SELECT {select} FROM {src}{where}{order_by} LIMIT {limit} OFFSET {offset}"
        cur = self._reader_cursor()
        try:
            rows = cur.execute(sql, params).fetchall()
            total: int | None = None
            if plan.with_total:
                row = cur.execute(f"SELECT count(*) FROM {src}{where}", params).fetchone()
                total = int(row[0]) if row else 0
        except duckdb.Error as exc:
            raise Invalid(
                "The query failed: {reason}",
                reason=_error_text(exc, self.data_dir),
                error_code="query_failed",
            ) from exc
        finally:
            cur.close()
        return QueryResult(
            fields=fields,
            types=[schema[f] for f in fields],
            rows=rows,
            total=total,
            millis=int((time.monotonic() - started) * 1000),
        )

    def _where(self, schema: Mapping[str, str], plan: QueryPlan) -> tuple[str, list[Any]]:
        parts: list[str] = []
        params: list[Any] = []
        for flt in plan.filters:
            col = ident(flt.field)
            sql_type = SQL_TYPES[schema[flt.field]]
            op = flt.op.lower().strip()
            if op not in OPS:
                raise Invalid("Unknown filter operator {op}.", op=flt.op, error_code="bad_filter")
            if op in ("is null", "is not null"):
                parts.append(f"{col} {op.upper()}")
            elif op == "in":
                values = flt.value if isinstance(flt.value, list | tuple) else [flt.value]
                if not values:
                    parts.append("FALSE")
                    continue
                parts.append(f"{col} IN ({', '.join(f'CAST(? AS {sql_type})' for _ in values)})")
                params.extend(values)
            elif op == "between":
                if not isinstance(flt.value, list | tuple) or len(flt.value) != 2:
                    raise Invalid("between takes two values.", error_code="bad_filter")
                parts.append(f"{col} BETWEEN CAST(? AS {sql_type}) AND CAST(? AS {sql_type})")
                params.extend(flt.value)
            elif op == "like":
                parts.append(f"CAST({col} AS VARCHAR) LIKE ?")
                params.append(str(flt.value))
            else:
                if flt.value is None:
                    raise Invalid(
                        "The filter on {field} needs a value.", field=flt.field, error_code="bad_filter"
                    )
                parts.append(f"{col} {op} CAST(? AS {sql_type})")
                params.append(flt.value)
        if plan.q:
            q_fields = (
                list(plan.q_fields)
                if plan.q_fields is not None
                else [
                    f for f in (plan.fields or schema) if schema.get(f) == "string" and not plan.masks.get(f)
                ]
            )
            for f in q_fields:
                if f not in schema:
                    raise Invalid("Unknown field {field}.", field=f, error_code="unknown_field")
            if q_fields:
                like = "%" + plan.q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
                parts.append(
                    "("
                    + " OR ".join(f"CAST({ident(f)} AS VARCHAR) ILIKE ? ESCAPE '\\'" for f in q_fields)
                    + ")"
                )
                params.extend([like] * len(q_fields))
            else:
                parts.append("FALSE")
        return (" WHERE " + " AND ".join(parts) if parts else ""), params

    def run_sql(
        self,
        sql: str,
        views: Mapping[str, View],
        *,
        timeout: float = 10.0,
        memory_limit: str = "512MB",
        threads: int = 0,
        max_rows: int = 10_000,
    ) -> SqlResult:
        """Run one SELECT (already validated by the caller) over `views` only.

        A fresh connection per call: the views are created, then the connection is locked
        down (no file access except these files, no extensions, settings locked) before
        `sql` runs. The query is interrupted after `timeout` seconds (Invalid with
        error_code "query_timeout") and bounded by `memory_limit` ("query_memory"); other
        errors are "query_failed". At most `max_rows` rows are returned (`truncated`)."""
        started = time.monotonic()
        con = duckdb.connect(":memory:")
        timer: threading.Timer | None = None
        try:
            allowed: list[str] = []
            for name, view in views.items():
                cols = "*"
                if view.fields or view.masks:
                    names = list(view.fields) or list(self.schema(view.files))
                    cols = ", ".join(
                        (mask_sql(ident(f), view.masks[f], self.salt) if view.masks.get(f) else ident(f))
                        + f" AS {ident(f)}"
                        for f in names
                    )
                elif view.files:
                    cols = "* EXCLUDE (_line, _reasons, _raw)"
                if not view.files:
                    raise Invalid("Dataset {name} has no data yet.", name=name, error_code="no_data")
                con.execute(
                    f"CREATE TEMP VIEW {ident(name)} AS "
                    f"SELECT {cols} FROM read_parquet({_files_sql(view.files)})"
                )
                allowed.extend(str(f) for f in view.files)
            con.execute(f"SET threads = {int(threads or min(self.threads, 2))}")
            con.execute(f"SET memory_limit = {literal(memory_limit)}")
            con.execute("SET max_temp_directory_size = '0B'")
            con.execute("SET autoinstall_known_extensions = false")
            con.execute("SET autoload_known_extensions = false")
            con.execute("SET enable_progress_bar = false")
            con.execute("SET allowed_paths = [" + ", ".join(literal(p) for p in allowed) + "]")
            con.execute("SET enable_external_access = false")
            con.execute("SET lock_configuration = true")
            timer = threading.Timer(timeout, con.interrupt)
            timer.daemon = True
            timer.start()
            try:
                cur = con.execute(sql)
                columns = [d[0] for d in cur.description or ()]
                rows = cur.fetchmany(max_rows + 1)
            except duckdb.InterruptException as exc:
                raise Invalid(
                    "The query took longer than {seconds} seconds and was stopped.",
                    seconds=round(timeout, 1),
                    error_code="query_timeout",
                ) from exc
            except duckdb.OutOfMemoryException as exc:
                raise Invalid(
                    "The query needs more memory than the limit of {limit}.",
                    limit=memory_limit,
                    error_code="query_memory",
                ) from exc
            except duckdb.Error as exc:
                raise Invalid(
                    "The query failed: {reason}",
                    reason=_error_text(exc, self.data_dir),
                    error_code="query_failed",
                ) from exc
            return SqlResult(
                columns=columns,
                rows=rows[:max_rows],
                millis=int((time.monotonic() - started) * 1000),
                truncated=len(rows) > max_rows,
            )
        finally:
            if timer:
                timer.cancel()
            con.close()


def detect_delimiter(path: Path) -> str:
    """The delimiter of a CSV file: the most frequent of , tab ; | in its header line."""
    with path.open("rb") as fp:
        first = fp.readline(1 << 16)
    counts = {d: first.count(d.encode()) for d in (",", "\t", ";", "|")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def _field_type(duck_type: str) -> str:
    t = duck_type.upper()
    if t in (
        "BIGINT",
        "INTEGER",
        "SMALLINT",
        "TINYINT",
        "HUGEINT",
        "UBIGINT",
        "UINTEGER",
        "USMALLINT",
        "UTINYINT",
    ):
        return "integer"
    if t in ("DOUBLE", "FLOAT", "REAL") or t.startswith("DECIMAL"):
        return "float"
    if t == "BOOLEAN":
        return "boolean"
    if t == "DATE":
        return "date"
    if t.startswith("TIMESTAMP"):
        return "datetime"
    return "string"


def _estimate_rows(source: Source) -> int:
    """Rows in a file from its size and the average length of its first lines."""
    try:
        size = source.path.stat().st_size
        with source.path.open("rb") as fp:
            head = fp.read(1 << 16)
        lines = max(head.count(b"\n"), 1)
        return max(int(size / (len(head) / lines)), 1)
    except OSError:
        return 0


class _ProgressWatcher:
    """Polls DuckDB's query progress from a thread and reports estimated rows read."""

    def __init__(self, con: duckdb.DuckDBPyConnection, report: Callable[[int], None], estimate: int) -> None:
        self.con, self.report, self.estimate = con, report, estimate
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ingest-progress", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            try:
                pct = float(self.con.query_progress())
            except Exception:  # the query may finish between the check and the call
                continue
            if pct >= 0:
                with contextlib.suppress(Exception):
                    self.report(int(self.estimate * min(pct, 100.0) / 100))


class _LineMap:
    """Record number (header = 1) → the line of the file the record starts on.

    The same when every record is one line (the usual case, checked by counting newlines);
    otherwise one pass of Python's csv module finds the start lines. Runs only for loads
    that have rejects."""

    def __init__(self, source: Source, records: int) -> None:
        self.source = source
        self._exact: dict[int, int] | None = None
        expected = records + (1 if source.header else 0)
        self.simple = _physical_lines(source.path) == expected

    def line(self, record_line: int) -> int:
        if self.simple:
            return record_line
        if self._exact is None:
            self._exact = self._scan()
        return self._exact.get(record_line, record_line)

    def _scan(self) -> dict[int, int]:
        import csv

        out: dict[int, int] = {}
        with self.source.path.open("r", encoding="utf-8-sig", newline="") as fp:
            reader = csv.reader(fp, delimiter=self.source.delimiter or detect_delimiter(self.source.path))
            record = 0
            start = 1
            for row in reader:
                if any(row) or (record == 0 and self.source.header):
                    record += 1
                    out[record] = start
                start = reader.line_num + 1
        return out


def _find_lines(
    source: Source, header: Sequence[str], rejects: Iterable[tuple[int, bytes]]
) -> list[int] | None:
    """The line of each reject of a parallel CSV load, found by its text; None when the file
    is not one where that is exact (the caller then numbers records with DuckDB).

    Exact because, in a file without quote characters, each record is one line whose text is
    its fields joined by the delimiter, and equal lines are equal records with equal verdicts:
    so the lines equal to a reject's text (never the header) are exactly the rejects with that
    text. Each DuckDB thread reads its part of the file front to back, so the rejects one
    thread reported are searched for in that order, each from where the last one was found; a
    reject not found that way, or two found on the same line, gives up."""
    if len(header) < 2:
        return None  # one column: an empty line might be a record
    delim = (source.delimiter or detect_delimiter(source.path)).encode()
    if len(delim) != 1:
        return None
    with source.path.open("rb") as fp:
        size = os.fstat(fp.fileno()).st_size
        if not size:
            return None
        with mmap.mmap(fp.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            if line_ends(mm) is None:
                return None
            first = 3 if mm[:3] == b"\xef\xbb\xbf" else 0
            if source.header:
                first = mm.find(b"\n", first) + 1  # the header line is never a reject
                if first == 0:
                    return None

            def ends_line(end: int) -> bool:
                return end == size or mm[end : end + 1] == b"\n" or mm[end : end + 2] == b"\r\n"

            def find(text: bytes, start: int) -> int:
                """The start of the first line at or after `start` that is `text`."""
                if start <= first and mm[first : first + len(text)] == text and ends_line(first + len(text)):
                    return first
                needle = b"\n" + text
                at = max(start, first, 1) - 1
                while (at := mm.find(needle, at)) >= 0:
                    if ends_line(at + len(needle)):
                        return at + 1
                    at += 1
                return -1

            starts: list[int] = []
            cursor: dict[int, int] = {}
            for thread, text in rejects:
                at = find(text, cursor.get(thread, first))
                if at < 0:
                    return None
                starts.append(at)
                cursor[thread] = at + len(text) + 1
            if len(set(starts)) != len(starts):
                return None
            # Line numbers: newlines before each start, counted once front to back.
            lines: dict[int, int] = {}
            line, last = 1, 0
            for at in sorted(starts):
                line += mm[last:at].count(b"\n")
                lines[at], last = line, at
            return [lines[at] for at in starts]


def line_ends(mm: mmap.mmap) -> str | None:
    """How the file's lines end when each record is one line: "\\r\\n" when it has carriage
    returns, all in CRLF line ends, "\\n" when it has none; None when a record may span lines
    or end at a lone carriage return (a quote character anywhere, or a CR outside a CRLF)."""
    if mm.find(b'"') >= 0:
        return None
    if mm.find(b"\r") < 0:
        return "\n"
    step = 1 << 24
    for at in range(0, len(mm), step):
        chunk = mm[at : at + step + 1]  # one byte more: a CRLF across the chunk's end
        if chunk.count(b"\r", 0, step) != chunk.count(b"\r\n"):
            return None
    return "\r\n"


def _physical_lines(path: Path) -> int:
    n, last = 0, b""
    with path.open("rb") as fp:
        while chunk := fp.read(1 << 22):
            n += chunk.count(b"\n")
            last = chunk[-1:]
    return n + (1 if last and last != b"\n" else 0)


@lru_cache(maxsize=8)
def _engine_for(data_dir: str, salt: str) -> Engine:
    return Engine(Path(data_dir), salt=salt)


def get_engine(data_dir: Path, salt: str = "") -> Engine:
    """The process-wide engine of a data dir (its reader database is shared by all threads)."""
    return _engine_for(str(Path(data_dir).resolve()), salt)
