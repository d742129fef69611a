"""The fast CSV load of the engine: Arrow parses the file batch by batch, the field rules run
as vectorised array operations on worker threads, and valid rows go straight to Parquet
(issue 4, ingestion speed).

It decides only what it can decide exactly: a value is *certainly valid* when it is in the
one canonical form whose meaning DuckDB's cast and rules agree on (an integer written as its
own digits, an ISO date, an ID number whose shape, date and check digit pass, …). Every other
row — rejects, and valid values written another way ("007", "5.0", " TRUE") — is judged by
the engine's SQL rules (`check`, and the explanation of failed rows afterwards), so the rules
have one definition and the verdicts, typed values, reasons and raw values are the SQL load's.
Files it cannot read exactly (quote characters, a lone carriage return, a byte order mark, a
header that is not the file's first line as DuckDB read it) are refused by `readable`; a
malformed or blank line met during the load raises `GiveUp`; the engine then takes its other
paths.

Only the engine calls this module; it writes files into a staging folder the engine owns.
"""

from __future__ import annotations

import mmap
import re
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from civicgrid.data.engine import BOOL_FALSE, BOOL_TRUE, ID_WEIGHTS, ColumnSpec, line_ends

if TYPE_CHECKING:
    import pyarrow as pa

#: Workers checking and writing batches: Arrow parses on one thread, so more do not pay, and
#: each holds a batch (≈ 60 MB) in memory.
MAX_WORKERS = 8
#: Bytes of the file per Arrow block (one batch); larger blocks, fewer `check` calls.
BLOCK = 1 << 24
#: Field types the fast load casts itself (others, and source date formats, take the SQL load).
TYPES = ("string", "integer", "float", "boolean", "date")
#: A rule regex that is a run of digits of one length: checked on the bytes, not by RE2.
_DIGIT_RUN = re.compile(r"(?:\\d|\[0-9\])\{(\d+)\}")
_DAYS = np.array([0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int16)

Check = Callable[["pa.Table"], "pa.Table"]


class GiveUp(Exception):
    """The fast load cannot take this file exactly or well (a line that is not one record, a
    blank line, most values written in forms only the SQL rules judge): the SQL loads will."""


def readable(path: Path, header: Sequence[str], delimiter: str, columns: Sequence[ColumnSpec]) -> bool:
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
            if mm[:3] == b"\xef\xbb\xbf":
                return False
            end = mm.find(b"\n")
            first = mm[: end if end >= 0 else len(mm)]
            crlf = first.endswith(b"\r")
            # CRLF ends only when the header line has one (DuckDB takes the line end from there).
            ends = line_ends(mm)
            if ends is None or (ends == "\r\n") != crlf:
                return False
            return first.removesuffix(b"\r").decode("utf-8", "replace").split(delimiter) == list(header)


# ---- vectorised rules ------------------------------------------------------------------------


def _offsets(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """A string array's value offsets (n + 1) and its data bytes, without copying."""
    bufs = arr.buffers()
    offsets = np.frombuffer(bufs[1], dtype=np.int32, count=len(arr) + 1, offset=arr.offset * 4)
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(1, np.uint8)
    return offsets, data


def _fixed(arr: pa.Array, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(which values are `width` bytes long, those values' bytes less '0' by position: a
    width × k matrix, each row contiguous; a digit gives its value, any other byte a value
    above 9)."""
    offsets, data = _offsets(arr)
    sized = np.diff(offsets) == width
    if arr.null_count:
        sized &= np.asarray(arr.is_valid(), dtype=bool)
    if sized.all() and len(sized):  # the usual case: a column of equal widths
        m = data[offsets[0] : offsets[-1]].reshape(len(sized), width).T
    else:
        m = data[offsets[:-1][sized][None, :] + np.arange(width)[:, None]]
    return sized, np.ascontiguousarray(m) - np.uint8(48)


def _spread(sized: np.ndarray, ok: np.ndarray) -> np.ndarray:
    out = np.zeros(len(sized), dtype=bool)
    out[sized] = ok
    return out


def _real_dates(ymd: np.ndarray) -> np.ndarray:
    """Whether the digits YYYYMMDD (an 8 × k int16 matrix) are a real date of year 1 or later."""
    year = ymd[0] * 1000 + ymd[1] * 100 + ymd[2] * 10 + ymd[3]
    month, day = ymd[4] * 10 + ymd[5], ymd[6] * 10 + ymd[7]
    ok = (year >= 1) & (month >= 1) & (month <= 12) & (day >= 1) & (day <= _DAYS[np.clip(month, 0, 12)])
    feb29 = np.flatnonzero((month == 2) & (day == 29))
    if len(feb29):  # the leap-year rule, only where it matters
        y = year[feb29]
        ok[feb29] &= (y % 4 == 0) & ((y % 100 != 0) | (y % 400 == 0))
    return ok


_DATE_DIGITS = [0, 1, 2, 3, 5, 6, 8, 9]
_DASH = np.uint8(ord("-") + 256 - 48)  # "-" less "0" wraps to 253


def iso_dates(arr: pa.Array) -> np.ndarray:
    """Values written YYYY-MM-DD that are real dates, as a bool per value (NULL: False)."""
    sized, m = _fixed(arr, 10)
    digits = m[_DATE_DIGITS]
    ok = (m[4] == _DASH) & (m[7] == _DASH) & (digits.max(axis=0) <= 9)
    return _spread(sized, ok & _real_dates(digits.astype(np.int16)))


def digit_strings(arr: pa.Array, width: int) -> np.ndarray:
    """Values of exactly `width` ASCII digits (the rule regex \\d{width}), as a bool per value."""
    sized, m = _fixed(arr, width)
    return _spread(sized, m.max(axis=0) <= 9)


def id_numbers(arr: pa.Array) -> np.ndarray:
    """Valid 18-character 身份证号 (the engine's `id_number_sql`: the shape, a real birth date,
    the GB 11643 check digit), as a bool per value; NULL values are False."""
    sized, m = _fixed(arr, 18)
    body = m[:17]
    last = m[17]  # 'X' - '0' = 40, 'x' - '0' = 72
    check = np.where((last == 40) | (last == 72), 10, last)
    ok = (body.max(axis=0) <= 9) & (check <= 10)
    ok &= ((body[6] == 1) & (body[7] >= 8)) | ((body[6] == 2) & (body[7] == 0))
    ok &= _real_dates(body[6:14].astype(np.int16))
    total = check.astype(np.int16)  # below 2^15 whatever the bytes: 17 × 10 × 255 + 255
    for weight, row in zip(ID_WEIGHTS, body, strict=True):
        total += weight * row.astype(np.int16)
    return _spread(sized, ok & (total % 11 == 1))


def mobiles(arr: pa.Array) -> np.ndarray:
    """Mainland mobile numbers (^1[3-9]\\d{9}$) as a bool per value; NULL values are False."""
    sized, m = _fixed(arr, 11)
    return _spread(sized, (m[0] == 1) & (m[1] >= 3) & (m.max(axis=0) <= 9))


def _fails(passed: pa.Array) -> np.ndarray:
    """Where an Arrow boolean rule result is False (NULL, a NULL value, passes)."""
    return ~np.asarray(passed.fill_null(True), dtype=bool)


_INT_DIGITS = np.array([10**k for k in range(1, 19)], dtype=np.int64)


def _canonical_cast(raw: pa.Array, target: pa.DataType, present: np.ndarray) -> tuple[pa.Array, np.ndarray]:
    """`raw` cast to `target` where the value is written in the one form DuckDB and Arrow
    read alike (an integer as its own digits, a real date as YYYY-MM-DD, a float that prints
    back as written), and which values are not (NULL there; the SQL rules judge them).
    `present`: the values that are not NULL."""
    import pyarrow as pa
    import pyarrow.compute as pc

    null = pa.scalar(None, pa.string())
    if target == pa.date32():
        plain = iso_dates(raw)
        typed = (raw if plain.all() else pc.if_else(pa.array(plain), raw, null)).cast(target)
        return typed, present & ~plain
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
    if typed.null_count > raw.null_count:
        same &= np.asarray(typed.is_valid(), dtype=bool)
    return typed, present & ~same


def check_column(
    col: ColumnSpec, raw: pa.Array, arrow_type: pa.DataType
) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """One column of a batch: its typed values, the rows that certainly fail one of its
    rules, and the rows whose value only the SQL rules can judge. Mirrors `engine._checks`:
    a NULL passes every rule but not_null."""
    import pyarrow as pa
    import pyarrow.compute as pc

    r = col.rules
    n = len(raw)
    present = np.asarray(raw.is_valid(), dtype=bool) if raw.null_count else np.ones(n, dtype=bool)
    unsure = np.zeros(n, dtype=bool)
    if col.type == "string":
        typed = raw
    elif col.type == "boolean":
        known = pc.is_in(raw, value_set=pa.array(BOOL_TRUE + BOOL_FALSE))
        typed = pc.if_else(known, pc.is_in(raw, value_set=pa.array(BOOL_TRUE)), pa.scalar(None, pa.bool_()))
        unsure = present & ~np.asarray(known, dtype=bool)
    else:
        typed, unsure = _canonical_cast(raw, arrow_type, present)
    fail = np.zeros(n, dtype=bool)
    if r.not_null and raw.null_count:
        fail |= ~present
    if r.regex:
        if run := _DIGIT_RUN.fullmatch(r.regex):
            fail |= present & ~digit_strings(raw, int(run.group(1)))
        else:
            fail |= _fails(pc.match_substring_regex(raw, f"^(?:{r.regex})$"))
    if r.min is not None or r.max is not None:
        target = pc.utf8_length(raw) if col.type == "string" else typed
        for bound, cmp in ((r.min, pc.greater_equal), (r.max, pc.less_equal)):
            if bound is not None:
                value: Any = date.fromisoformat(str(bound)) if col.type == "date" else float(bound)
                fail |= _fails(cmp(target, pa.scalar(value)))
    if r.id_number:
        fail |= present & ~id_numbers(raw)
    if r.mobile:
        fail |= present & ~mobiles(raw)
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
    columns: Sequence[ColumnSpec],
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

    Batches are checked and written by up to `threads` workers (at most `MAX_WORKERS`) while
    Arrow parses the next ones; at most two more batches than workers are held at once.
    `check(table)`: the SQL rules over the rows of one batch the vectorised checks cannot
    judge, a table of the file's columns as text plus `_i` (row in batch); it returns `_i`,
    `_ok`, the typed columns, `_reasons` and `_raw`. Raises GiveUp when it cannot take the
    file."""
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
    workers = max(1, min(threads, MAX_WORKERS))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ingest") as pool:
        try:
            for k, batch in enumerate(reader):
                if bad:
                    raise GiveUp(str(bad[0].text)[:200])
                pending.append(pool.submit(batches.run, k, batch, read))
                read += batch.num_rows
                while len(pending) > workers + 2:  # ≈ 60 MB a batch in memory
                    pending.popleft().result()
                if progress:
                    progress(read)
            if bad:
                raise GiveUp(str(bad[0].text)[:200])
            while pending:
                pending.popleft().result()
        finally:
            for f in pending:
                f.cancel()
    return Loaded(read=read, failed=sorted((staging / "failed").glob("*.parquet")))


class _Batches:
    """Checks one batch and writes what it holds (`run`, on a worker thread)."""

    def __init__(self, columns: Sequence[ColumnSpec], staging: Path, check: Check) -> None:
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
                raise GiveUp("a blank line")
        with self._lock:
            if self.dictionary is None:
                # Dictionary pages only where values repeat (codes: DuckDB then filters once
                # per distinct value); for unique values they cost the write a third more.
                self.dictionary = [
                    name
                    for name, src in zip(self.names, self.sources, strict=True)
                    if pc.count_distinct(batch.column(src).slice(0, 10_000)).as_py() * 2 <= min(n, 10_000)
                ]
        typed, fail, unsure = [], np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
        for src, col, t in zip(self.sources, self.columns, self.types, strict=True):
            values, f, u = check_column(col, batch.column(src), t)
            typed.append(values)
            fail |= f
            unsure |= u
        if n >= 10_000 and np.count_nonzero(unsure) * 10 > n:
            # The SQL rules would judge much of the file one batch at a time, on one thread:
            # the SQL load does that on every thread (a small file costs little either way).
            raise GiveUp("a tenth of the values are written in forms only the SQL rules judge")
        line = base + 2  # of the batch's first record: the header is line 1
        failed = fail & ~unsure
        if failed.any():
            at = np.flatnonzero(failed)
            raw = pa.Table.from_batches([batch]).take(at).append_column("_i", pa.array(at + line))
            pq.write_table(raw, self.staging / "failed" / f"raw_{k:06d}.parquet", compression="none")
        ok = ~(fail | unsure)
        table = self._table(n, typed)
        if not ok.all():
            table = table.filter(pa.array(ok))
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
            if yes.any():
                # Valid rows written another way: typed by SQL, put back in the file's order.
                good = decided.filter(pa.array(yes))
                extra = self._table(
                    len(good), [good.column(c).cast(t) for c, t in zip(self.names, self.types, strict=True)]
                )
                order = np.concatenate([np.flatnonzero(ok), np.asarray(good.column("_i"))])
                table = pa.concat_tables([table, extra]).take(pa.array(np.argsort(order, kind="stable")))
        if len(table):
            pq.write_table(
                table,
                self.staging / "out" / "_ok=true" / f"data_{k:06d}.parquet",
                row_group_size=len(table),  # one row group per batch: ≈ DuckDB's 122,880 rows
                compression="snappy",
                use_dictionary=self.dictionary,
            )
