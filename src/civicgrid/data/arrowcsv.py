"""The fast CSV load of the engine: Arrow reads the file on every core, the field rules run as
vectorised array operations, and valid rows go straight to Parquet (issue 4, ingestion speed).

It decides only what it can decide exactly: a value is *certainly valid* when it is in the
one canonical form whose meaning DuckDB's cast and rules agree on (an integer written as its
own digits, an ISO date, an ID number whose shape, date and check digit pass, …). Every other
row — rejects, and valid values written another way ("007", "5.0", " TRUE") — is handed to
the caller's `check` (the engine's SQL rules, over just those rows), so the rules have one
definition and the verdicts, typed values, reasons and raw values are the same as the SQL
load's. Files it cannot read exactly (quote characters, a lone carriage return, a byte order
mark, a header that is not the file's first line as DuckDB read it, a malformed or blank line)
return None before or during the load, and the engine takes its other paths.

Only the engine calls this module; it writes files into a staging folder the engine owns.
"""

from __future__ import annotations

import mmap
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pyarrow as pa

#: Rows per Parquet row group: DuckDB's default, so filtered reads skip the same way.
ROW_GROUP = 122_880
#: Bytes of the file per Arrow block (one batch); larger blocks, fewer `check` calls.
BLOCK = 1 << 24
#: Field types the fast load casts itself (others, and source date formats, take the SQL load).
TYPES = ("string", "integer", "float", "boolean", "date")
_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_DAYS = np.array([0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int16)
_CHECK = np.frombuffer(b"10X98765432", dtype=np.uint8)
#: The spellings DuckDB's boolean rule reads, exactly as written (others go to `check`).
_TRUE = ("true", "t", "1", "yes", "y", "是")
_FALSE = ("false", "f", "0", "no", "n", "否")

Check = Callable[["pa.Table"], "pa.Table"]


class Malformed(Exception):
    """A line the fast load cannot read as one record (wrong field count, blank line)."""


def readable(path: Path, header: Sequence[str], delimiter: str, columns: Sequence[Any]) -> bool:
    """Whether the fast load reads this file exactly as DuckDB's CSV reader would: every
    record one line, no quoting, the header on line 1, the types and rules it knows."""
    if len(header) < 2 or len(delimiter) != 1 or not delimiter.isascii():
        return False  # one column: an empty line would be a record
    for c in columns:
        if c.type not in TYPES or c.date_format or c.rules.date_format:
            return False
    with path.open("rb") as fp:
        if not fp.read(1):
            return False
        with mmap.mmap(fp.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            if mm[:3] == b"\xef\xbb\xbf" or mm.find(b'"') >= 0:
                return False
            end = mm.find(b"\n")
            first = mm[: end if end >= 0 else len(mm)]
            crlf = first.endswith(b"\r")
            if crlf:
                first = first[:-1]
            if mm.find(b"\r") >= 0 and not (crlf and only_crlf(mm)):
                return False
            return first.decode("utf-8", "replace").split(delimiter) == list(header)


def only_crlf(mm: mmap.mmap) -> bool:
    """Every carriage return in the file is the first half of a CRLF line end."""
    step = 1 << 24
    for at in range(0, len(mm), step):
        chunk = mm[at : at + step + 1]
        if chunk.count(b"\r", 0, step) != chunk.count(b"\r\n"):
            return False
    return True


# ---- vectorised rules ------------------------------------------------------------------------


def _offsets(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """A string array's value offsets (n + 1) and its data bytes, without copying."""
    bufs = arr.buffers()
    offsets = np.frombuffer(bufs[1], dtype=np.int32, count=len(arr) + 1, offset=arr.offset * 4)
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(1, np.uint8)
    return offsets, data


def _fixed(arr: pa.Array, width: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """(which values are `width` bytes long, their digit values by position: `width` arrays
    over those values; a byte that is not '0'–'9' gives a value above 9)."""
    offsets, data = _offsets(arr)
    sized = np.diff(offsets) == width
    if arr.null_count:
        sized &= np.asarray(arr.is_valid(), dtype=bool)
    if sized.all() and len(sized):
        # The usual case: one column of equal widths, read as a matrix without copying.
        m = data[offsets[0] : offsets[-1]].reshape(len(sized), width) - np.uint8(48)
        return sized, [m[:, j] for j in range(width)]
    starts = offsets[:-1][sized]
    return sized, [data[starts + j] - np.uint8(48) for j in range(width)]


def _real_dates(d: Sequence[np.ndarray]) -> np.ndarray:
    """Whether the digits YYYYMMDD (eight int16 arrays) are a real date of year 1 or later."""
    year = d[0] * 1000 + d[1] * 100 + d[2] * 10 + d[3]
    month, day = d[4] * 10 + d[5], d[6] * 10 + d[7]
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    last = np.where((month == 2) & ~leap, 28, _DAYS[np.clip(month, 0, 12)])
    return (year >= 1) & (month >= 1) & (month <= 12) & (day >= 1) & (day <= last)


def iso_dates(arr: pa.Array) -> np.ndarray:
    """Values written YYYY-MM-DD that are real dates, as a bool per value (NULL: False)."""
    sized, d = _fixed(arr, 10)
    dash = np.uint8(ord("-") + 256 - 48)  # "-" − "0" wraps to 253
    ok = (d[4] == dash) & (d[7] == dash)
    digits = [d[j] for j in (0, 1, 2, 3, 5, 6, 8, 9)]
    for x in digits:
        ok &= x <= 9
    ok &= _real_dates([x.astype(np.int16) for x in digits])
    out = np.zeros(len(sized), dtype=bool)
    out[sized] = ok
    return out


def id_numbers(arr: pa.Array) -> np.ndarray:
    """Valid 18-character 身份证号 (the engine's `id_number_sql`: the shape, a real birth date,
    the GB 11643 check digit), as a bool per value; NULL values are False."""
    sized, d = _fixed(arr, 18)
    ok = np.ones(int(sized.sum()), dtype=bool)
    for j in range(17):
        ok &= d[j] <= 9
    last = d[17]  # 'X' - '0' = 40, 'x' - '0' = 72
    c = np.where((last == 40) | (last == 72), 10, last).astype(np.int16)
    ok &= c <= 10
    w = [x.astype(np.int16) for x in d[:17]]  # sums stay below 2,000, years below 10,000
    ok &= ((w[6] == 1) & (w[7] >= 8)) | ((w[6] == 2) & (w[7] == 0))
    ok &= _real_dates(w[6:14])
    total = c
    for weight, digit in zip(_WEIGHTS, w, strict=True):
        total += weight * digit
    ok &= total % 11 == 1
    out = np.zeros(len(sized), dtype=bool)
    out[sized] = ok
    return out


def mobiles(arr: pa.Array) -> np.ndarray:
    """Mainland mobile numbers (^1[3-9]\\d{9}$) as a bool per value; NULL values are False."""
    sized, d = _fixed(arr, 11)
    ok = (d[0] == 1) & (d[1] >= 3)
    for j in range(1, 11):
        ok &= d[j] <= 9
    out = np.zeros(len(sized), dtype=bool)
    out[sized] = ok
    return out


def _fails(passed: pa.Array) -> np.ndarray:
    """Where an Arrow boolean rule result is False (NULL, a NULL value, passes)."""
    return ~np.asarray(passed.fill_null(True), dtype=bool)


_INT_DIGITS = np.array([10**k for k in range(1, 19)], dtype=np.int64)


def _canonical_cast(raw: pa.Array, target: pa.DataType) -> tuple[pa.Array, np.ndarray]:
    """`raw` cast to `target` where the value is written in the one form DuckDB and Arrow
    read alike (an integer as its own digits, a real date as YYYY-MM-DD, a float that prints
    back as written), and where a value is not (NULL there; the SQL rules decide it)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    null = pa.scalar(None, pa.string())
    if target == pa.date32():
        plain = iso_dates(raw)
        typed = (raw if plain.all() else pc.if_else(pa.array(plain), raw, null)).cast(target)
        return typed, np.asarray(raw.is_valid(), dtype=bool) & ~plain
    try:
        typed = raw.cast(target)
    except pa.ArrowInvalid:
        # Some value does not parse (a reject, or "5.0" for an integer): cast the rest.
        pattern = r"^-?[0-9]{1,18}$" if target == pa.int64() else r"^-?[0-9]{1,15}(\.[0-9]{1,15})?$"
        plain = pc.match_substring_regex(raw, pattern).fill_null(False)
        typed = pc.if_else(plain, raw, null).cast(target)
    if target == pa.int64():
        # Arrow also reads "007" and "0x1A": the canonical text has exactly the value's digits.
        v = np.asarray(typed.fill_null(0), dtype=np.int64)
        digits = np.searchsorted(_INT_DIGITS, np.abs(v), side="right") + 1 + (v < 0)
        same = digits == np.diff(_offsets(raw)[0])
    else:
        same = ~_fails(pc.equal(typed.cast(pa.string()), raw))
    unsure = np.asarray(raw.is_valid(), dtype=bool) & ~(same & np.asarray(typed.is_valid(), dtype=bool))
    return typed, unsure


def check_column(col: Any, raw: pa.Array, arrow_type: pa.DataType) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """One column of a batch: its typed values, the rows that certainly fail one of its
    rules, and the rows whose value only the SQL rules can judge. Mirrors `engine._checks`:
    a NULL passes every rule but not_null."""
    import pyarrow as pa
    import pyarrow.compute as pc

    r = col.rules
    n = len(raw)
    unsure = np.zeros(n, dtype=bool)
    if col.type == "string":
        typed = raw
    elif col.type == "boolean":
        known = pc.is_in(raw, value_set=pa.array(_TRUE + _FALSE))
        typed = pc.if_else(known, pc.is_in(raw, value_set=pa.array(_TRUE)), pa.scalar(None, pa.bool_()))
        unsure = np.asarray(raw.is_valid(), dtype=bool) & ~np.asarray(known, dtype=bool)
    else:
        typed, unsure = _canonical_cast(raw, arrow_type)
    fail = np.zeros(n, dtype=bool)
    if r.not_null and raw.null_count:
        fail |= np.asarray(raw.is_null(), dtype=bool)
    if r.regex:
        fail |= _fails(pc.match_substring_regex(raw, f"^(?:{r.regex})$"))
    if r.min is not None or r.max is not None:
        target = pc.utf8_length(raw) if col.type == "string" else typed
        for bound, cmp in ((r.min, pc.greater_equal), (r.max, pc.less_equal)):
            if bound is not None:
                value: Any = date.fromisoformat(str(bound)) if col.type == "date" else float(bound)
                fail |= _fails(cmp(target, pa.scalar(value)))
    valid = np.asarray(raw.is_valid(), dtype=bool) if raw.null_count else None
    if r.id_number:
        bad = ~id_numbers(raw)
        fail |= bad if valid is None else bad & valid
    if r.mobile:
        bad = ~mobiles(raw)
        fail |= bad if valid is None else bad & valid
    return typed, fail, unsure


# ---- the load ----------------------------------------------------------------------------------


@dataclass
class Loaded:
    read: int  # records read
    failed: list[Path]  # rows certain to fail a rule, as text with `_i` = their line: to explain


def load(
    path: Path,
    header: Sequence[str],
    delimiter: str,
    columns: Sequence[Any],
    staging: Path,
    check: Check,
    progress: Callable[[int], None] | None = None,
    threads: int = 1,
) -> Loaded:
    """Read `path` and write into `staging`: the valid rows as `out/_ok=true/data_<batch>.parquet`
    (the engine's data layout: `_line`, the typed columns, `_reasons`, `_raw`; one file per
    batch, so the names keep the file's order); rows the SQL rules judged (`check`) and
    rejected as `out/_ok=false/data_<batch>.parquet` (`_line` of the file, `_reasons` joined
    by '|', `_raw` JSON); and rows certain to fail a rule as they were read, to be explained
    by the SQL rules in one pass afterwards (`Loaded.failed`).

    Batches are checked and written by `threads` workers while Arrow parses the next ones.
    `check(table)`: the SQL rules over the rows of one batch the vectorised checks cannot
    judge, a table of the file's columns as text plus `_i` (row in batch); it returns `_i`,
    `_ok`, the typed columns, `_reasons` and `_raw`. Raises Malformed when a line is not one
    record."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    bad: list[Any] = []

    def on_invalid(row: Any) -> str:
        bad.append(row)
        return "skip"

    reader = pacsv.open_csv(
        path,
        read_options=pacsv.ReadOptions(
            column_names=list(header), skip_rows=1, block_size=BLOCK, use_threads=threads > 1
        ),
        parse_options=pacsv.ParseOptions(
            delimiter=delimiter,
            quote_char=False,
            escape_char=False,
            newlines_in_values=False,
            ignore_empty_lines=False,
            invalid_row_handler=on_invalid,
        ),
        convert_options=pacsv.ConvertOptions(
            column_types=dict.fromkeys(header, pa.string()),
            null_values=[""],
            strings_can_be_null=True,
        ),
    )
    batches = _Batches(columns, staging, check)
    read = 0
    pending: deque[Future[None]] = deque()
    with ThreadPoolExecutor(max_workers=max(threads, 1), thread_name_prefix="ingest") as pool:
        try:
            for k, batch in enumerate(reader):
                if bad:
                    raise Malformed(str(bad[0].text)[:200])
                pending.append(pool.submit(batches.run, k, batch, read))
                read += batch.num_rows
                while len(pending) > 2 * max(threads, 1):  # bounded memory
                    pending.popleft().result()
                if progress:
                    progress(read)
            if bad:
                raise Malformed(str(bad[0].text)[:200])
            while pending:
                pending.popleft().result()
        finally:
            for f in pending:
                f.cancel()
    return Loaded(read=read, failed=sorted((staging / "failed").glob("*.parquet")))


class _Batches:
    """Checks one batch and writes what it holds (`run`, on a worker thread)."""

    def __init__(self, columns: Sequence[Any], staging: Path, check: Check) -> None:
        import pyarrow as pa

        self.columns = list(columns)
        self.staging, self._check = staging, check
        for sub in ("out/_ok=true", "out/_ok=false", "failed"):
            (staging / sub).mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.types = [
            {"string": pa.string(), "integer": pa.int64(), "float": pa.float64(), "boolean": pa.bool_()}.get(
                c.type, pa.date32()
            )
            for c in columns
        ]
        self.names = [c.name for c in columns]
        self.sources = [c.source or c.name for c in columns]
        self.json = pa.json_(pa.string())
        self.schema = pa.schema(
            [
                pa.field("_line", pa.int64()),
                *(pa.field(n, t) for n, t in zip(self.names, self.types, strict=True)),
                pa.field("_reasons", pa.string()),
                pa.field("_raw", self.json),
            ]
        )
        self.rejects = pa.schema([("_line", pa.int64()), ("_reasons", pa.string()), ("_raw", pa.string())])
        self.dictionary: list[str] | None = None

    def _table(self, n: int, values: Sequence[pa.Array]) -> pa.Table:
        import pyarrow as pa

        return pa.table(
            [pa.nulls(n, pa.int64()), *values, pa.nulls(n, pa.string()), pa.nulls(n, self.json)],
            schema=self.schema,
        )

    def run(self, k: int, batch: pa.RecordBatch, base: int) -> None:
        """Check batch `k` (its first record is record `base` of the file, 0-based) and
        write its valid rows, its judged rejects and its certain failures."""
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        n = batch.num_rows
        if all(c.null_count for c in batch.columns):
            # A blank line reads as a record of NULLs; DuckDB skips it (and so would shift
            # every later line number here): the SQL load reads such a file.
            blank = np.ones(n, dtype=bool)
            for c in batch.columns:
                blank &= np.asarray(c.is_null(), dtype=bool)
            if blank.any():
                raise Malformed("a blank line")
        with self._lock:
            if self.dictionary is None:
                # Dictionary pages only where values repeat; elsewhere they cost the write
                # a third more and make the file larger.
                self.dictionary = [
                    name
                    for name, src in zip(self.names, self.sources, strict=True)
                    if pc.count_distinct(batch.column(src)).as_py() * 10 <= n
                ]
        typed, fail, unsure = [], np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
        for src, col, t in zip(self.sources, self.columns, self.types, strict=True):
            values, f, u = check_column(col, batch.column(src), t)
            typed.append(values)
            fail |= f
            unsure |= u
        table = self._table(n, typed)
        line = base + 2  # of the batch's first record: the header is line 1
        failed = fail & ~unsure
        if failed.any():
            at = np.flatnonzero(failed)
            raw = pa.Table.from_batches([batch]).take(at).append_column("_i", pa.array(at + line))
            pq.write_table(raw, self.staging / "failed" / f"raw_{k:06d}.parquet", compression="none")
        ok = ~(fail | unsure)
        if unsure.any():
            at = np.flatnonzero(unsure)
            sub = pa.Table.from_batches([batch]).take(at).append_column("_i", pa.array(at))
            with self._lock:  # one DuckDB connection
                decided = self._check(sub)
            yes = np.asarray(decided.column("_ok"), dtype=bool)
            if (~yes).any():
                no = decided.filter(pa.array(~yes))
                rejects = pa.table(
                    [
                        pa.array(np.asarray(no.column("_i")) + line),
                        no.column("_reasons"),
                        no.column("_raw").cast(pa.string()),
                    ],
                    schema=self.rejects,
                )
                pq.write_table(rejects, self.staging / "out" / "_ok=false" / f"data_{k:06d}.parquet")
            table = table.filter(pa.array(ok))
            if yes.any():
                # Valid rows written another way: typed by SQL, put back in the file's order.
                good = decided.filter(pa.array(yes))
                extra = self._table(
                    len(good), [good.column(c).cast(t) for c, t in zip(self.names, self.types, strict=True)]
                )
                order = np.concatenate([np.flatnonzero(ok), np.asarray(good.column("_i"))])
                table = pa.concat_tables([table, extra]).take(pa.array(np.argsort(order, kind="stable")))
        elif failed.any():
            table = table.filter(pa.array(ok))
        if len(table):
            pq.write_table(
                table,
                self.staging / "out" / "_ok=true" / f"data_{k:06d}.parquet",
                row_group_size=ROW_GROUP,
                compression="snappy",
                use_dictionary=self.dictionary,
            )
