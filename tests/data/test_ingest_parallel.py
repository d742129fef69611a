"""The fast CSV loads against the one-pass load: same rows in the same order, same rejects
with the same lines, reasons and raw values, same quality report — for the Arrow load
(`arrowcsv`, plain files) and for DuckDB's parallel load, whichever way the latter finds its
rejects' lines (by their text, or by a second read that numbers records)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from civicgrid.data import arrowcsv
from civicgrid.data import engine as eng

COLUMNS = [
    eng.ColumnSpec("pid", "integer", rules=eng.Rules(not_null=True)),
    eng.ColumnSpec("id_number", rules=eng.Rules(id_number=True)),
    eng.ColumnSpec("name", rules=eng.Rules(not_null=True)),
    eng.ColumnSpec("mobile", rules=eng.Rules(mobile=True)),
    eng.ColumnSpec("born", "date"),
    eng.ColumnSpec("code", rules=eng.Rules(regex=r"\d{3}")),
]
HEADER = "pid,note,name,id_number,mobile,born,code"  # an extra column, fields in another order


def _id(body: str) -> str:
    total = sum(w * int(d) for w, d in zip(eng.ID_WEIGHTS, body, strict=True))
    return body + eng.ID_CHECK[total % 11]


def _line(pid: int, *, mobile: str = "", born: str = "1990-01-02", code: str = "123", name: str = "") -> str:
    id_number = _id(f"3301021990{1 + pid % 12:02d}{1 + pid % 28:02d}{pid % 1000:03d}")
    mobile = mobile or f"139{pid:08d}"
    return f"{pid},n{pid % 3},{name or f'人{pid}'},{id_number},{mobile},{born},{code}"


def _bad(pid: int) -> str:
    """A record that fails a rule (which one depends on pid)."""
    kind = pid % 4
    if kind == 0:
        return _line(pid, mobile="12345")
    if kind == 1:
        return _line(pid, born="1990-02-30")
    if kind == 2:
        return _line(pid, code="12a")
    return _line(pid, mobile="12345", code="1")


def _file(n: int = 60, every: int = 7) -> list[str]:
    return [_bad(i) if i % every == 3 % every else _line(i) for i in range(1, n + 1)]


def _load(
    tmp: Path,
    content: bytes,
    threads: int,
    arrow: bool = False,
    columns: list[eng.ColumnSpec] = COLUMNS,
    **source: Any,
) -> dict[str, Any]:
    """Load `content` with an engine of `threads` threads (1 and not `arrow`: the one-pass
    load) and read everything back: the result, the valid rows in stored order, the rejects."""
    e = eng.Engine(tmp / f"data-{threads}-{arrow}", threads=threads)
    path = tmp / f"in-{threads}-{arrow}.csv"
    path.write_bytes(content)
    cluster = source.pop("cluster", ())
    if source.get("header") is False:  # DuckDB names the columns column0, column1, …
        names = HEADER.split(",")
        columns = [eng.ColumnSpec(c.name, c.type, f"column{names.index(c.name)}", c.rules) for c in COLUMNS]
    staging = e.staging_dir("people")
    with pytest.MonkeyPatch.context() as mp:
        if not arrow:
            mp.setattr(arrowcsv, "readable", lambda *a: False)
        result = e.load(eng.Source(path, "csv", **source), columns, staging, cluster_by=cluster)
    published = e.publish(staging, "people", 1)
    assert sorted(f.name for f in (e.data_dir / published.path).iterdir()) == ["data", "rejected"]
    page = e.query(published.files, eng.QueryPlan(limit=100_000, with_total=False))
    rejected = e.read_rejected(published.path, limit=100_000)
    out = {
        "result": {k: v for k, v in vars(result).items() if k != "millis"},
        "rows": page.rows,
        "rejected": rejected,
    }
    e.close()
    return out


@pytest.fixture
def found(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Records, per parallel load with rejects, whether their lines were found by text."""
    calls: list[bool] = []
    real = eng._find_lines

    def spy(*args: Any) -> list[int] | None:
        lines = real(*args)
        calls.append(lines is not None)
        return lines

    monkeypatch.setattr(eng, "_find_lines", spy)
    return calls


def _same(tmp: Path, content: bytes, **source: Any) -> dict[str, Any]:
    one = _load(tmp, content, 1, **dict(source))
    two = _load(tmp, content, 2, **dict(source))
    assert two["result"] == one["result"]
    assert two["rows"] == one["rows"]
    assert two["rejected"] == one["rejected"]
    return two


def _text(lines: list[str], *, header: bool = True, end: str = "\n", last: bool = True) -> bytes:
    body = end.join([*([HEADER] if header else []), *lines])
    return (body + (end if last else "")).encode()


def test_rejects_found_by_their_text(tmp_path: Path, found: list[bool]) -> None:
    lines = _file()
    lines[10:10] = ["", ""]  # blank lines: skipped, but they count in line numbers
    lines.append(lines[2])  # the same rejected record twice
    out = _same(tmp_path, _text(lines, last=False))
    assert found == [True]
    res = out["result"]
    assert res["rejected"] == 10 and res["rows"] == 51
    expected = [i + 2 for i, text in enumerate(lines) if text and text in {_bad(p) for p in range(61)}]
    assert [r["_line"] for r in out["rejected"]] == expected
    assert [r[0] for r in out["rows"]] == [p for p in range(1, 61) if p % 7 != 3]


def test_crlf_bom_and_no_header(tmp_path: Path, found: list[bool]) -> None:
    content = b"\xef\xbb\xbf" + _text([_bad(4), *_file()], header=False, end="\r\n")
    out = _same(tmp_path, content, header=False)
    assert found == [True]
    assert out["rejected"][0]["_line"] == 1


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param('1000,"a, quoted\nnote",名,110,13912345678,1990-01-01,123', id="quoted-newline"),
        pytest.param("1000,n,名", id="malformed"),
    ],
)
def test_rejects_numbered_by_a_second_read(tmp_path: Path, found: list[bool], extra: str) -> None:
    lines = _file()
    lines[20:20] = [extra]
    out = _same(tmp_path, _text(lines))
    assert found in ([], [False])  # a malformed line skips the search by text altogether
    assert out["result"]["rejected"] >= 9


def test_without_rejects_the_parallel_load_is_one_pass(tmp_path: Path, found: list[bool]) -> None:
    out = _same(tmp_path, _text([_line(i) for i in range(1, 40)]))
    assert found == [] and out["result"]["rejected"] == 0


def test_too_many_rejects_fall_back_to_the_one_pass_load(
    tmp_path: Path, found: list[bool], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(eng, "_PARALLEL_REJECT_LIMIT", 3)
    out = _same(tmp_path, _text(_file(every=2)))
    assert found == [] and out["result"]["rejected"] == 30


def test_clustered_parallel_load(tmp_path: Path) -> None:
    content = _text(_file())
    one = _load(tmp_path, content, 1, cluster=["code"])
    two = _load(tmp_path, content, 2, cluster=["code"])
    assert two["result"] == one["result"] and two["rejected"] == one["rejected"]
    assert sorted(two["rows"]) == sorted(one["rows"])
    assert [r[-1] for r in two["rows"]] == sorted(r[-1] for r in two["rows"])


def test_a_large_file_read_by_several_threads(tmp_path: Path, found: list[bool]) -> None:
    """Big enough for DuckDB to split the file between threads; rejects everywhere."""
    lines = [_bad(i) if i % 997 == 5 else _line(i) for i in range(1, 400_001)]
    out = _same(tmp_path, _text(lines))
    assert found == [True]
    assert [r["_line"] for r in out["rejected"]] == [i + 1 for i in range(1, 400_001) if i % 997 == 5]


# ---- the Arrow load (arrowcsv) ---------------------------------------------------------------


@pytest.fixture
def arrow_used(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records, per Arrow-eligible load, whether the Arrow load finished it ("arrow") or gave
    up for the SQL loads ("gave up")."""
    calls: list[str] = []
    real, readable = eng.Engine._load_arrow, arrowcsv.readable

    def spy(self: eng.Engine, *args: Any) -> Any:
        result = real(self, *args)
        if arrowcsv.readable is readable:  # not a reference load with Arrow switched off
            calls.append("arrow" if result is not None else "gave up")
        return result

    monkeypatch.setattr(eng.Engine, "_load_arrow", spy)
    return calls


def _same_arrow(tmp: Path, content: bytes, columns: list[eng.ColumnSpec] | None = None) -> dict[str, Any]:
    """The Arrow load against the one-pass load: everything a user sees is the same."""
    one = _load(tmp, content, 1, columns=columns or COLUMNS)
    fast = _load(tmp, content, 2, arrow=True, columns=columns or COLUMNS)
    assert fast["result"] == one["result"]
    assert fast["rows"] == one["rows"]
    assert fast["rejected"] == one["rejected"]
    return fast


def test_arrow_load_matches_the_one_pass_load(
    tmp_path: Path, arrow_used: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(arrowcsv, "BLOCK", 1 << 12)  # many batches: order and lines across them
    lines = [_bad(i) if i % 13 == 5 else _line(i) for i in range(1, 1200)]
    lines[7] = _line(8).replace("8,", "008,", 1)  # valid, written another way: judged by SQL
    lines[9] = _line(10, born="1990-1-2")
    lines[11] = _line(12).replace("12,", " 12,", 1)
    out = _same_arrow(tmp_path, _text(lines, end="\r\n"))
    assert arrow_used == ["arrow"]
    assert [r["_line"] for r in out["rejected"]] == [i + 1 for i in range(1, 1200) if i % 13 == 5]
    assert [r[0] for r in out["rows"]][:12] == [1, 2, 3, 4, 6, 7, 8, 9, 10, 11, 12, 13]


def test_arrow_load_leaves_a_file_of_odd_spellings_to_the_sql_load(
    tmp_path: Path, arrow_used: list[str]
) -> None:
    """Ids written "0001", "0002", …: valid, but only the SQL rules may say so."""
    lines = [_line(i).replace(f"{i},", f"{i:05d},", 1) for i in range(1, 12_001)]
    out = _same_arrow(tmp_path, _text(lines))
    assert arrow_used == ["gave up"] and out["result"]["rows"] == 12_000


def test_arrow_load_with_half_the_rows_rejected(tmp_path: Path, arrow_used: list[str]) -> None:
    out = _same_arrow(tmp_path, _text(_file(n=400, every=2)))
    assert arrow_used == ["arrow"] and out["result"]["rejected"] == 200


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (_text([*_file()[:5], "", *_file()[5:]]), "blank line"),
        (_text([*_file()[:5], '1000,"q",名,110,13912345678,1990-01-01,123', *_file()[5:]]), "quote"),
        (_text([*_file()[:5], "1000,n,名", *_file()[5:]]), "malformed"),
        (b"\xef\xbb\xbf" + _text(_file()), "byte order mark"),
        (_text(_file(), end="\r"), "carriage returns"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_arrow_load_leaves_what_it_cannot_read_exactly(
    tmp_path: Path, arrow_used: list[str], content: bytes, why: str
) -> None:
    _same_arrow(tmp_path, content)
    assert arrow_used in ([], ["gave up"]), why


ID_OK = _id("33010219900102001")


def _id_x() -> str:
    """A valid ID number whose check character is X, written lower case."""
    for seq in range(1000):
        value = _id(f"33010219900102{seq:03d}")
        if value.endswith("X"):
            return value[:-1] + "x"
    raise AssertionError("no X check digit")


#: Per column: canonical valid spellings (the vectorised checks settle them) …
GOOD = {
    "n": ["1", "42", "0", "1000"],
    "f": ["1.5", "2", "-2.25"],
    "b": ["true", "false", "是"],
    "d": ["2020-02-29", "2000-01-01"],
    "s": ["ab", "abc"],
    "id": [ID_OK, _id_x()],
    "m": ["13912345678", "19912345678"],
}
#: … and the rest: other spellings of valid values (the SQL rules judge them) and bad ones.
OTHER = {
    "n": ["007", "-3", "-0", " 5", "5.0", "5.5", "0x1A", "abc", "", "99999999999999999999", "1001"],
    "f": ["0.1", "1e3", "-0.0", "3.", "abc", "", "1.50", "inf"],
    "b": ["TRUE", "Yes", "否", "0", "1", "maybe", "", " t"],
    "d": [
        "2021-02-29",
        "2020-01/05",
        "0000-01-01",
        "1999-12-31",
        "2020-1-5",
        "20200105",
        "2020/01/05",
        "",
        "abcd-ef-gh",
    ],
    "s": ["abcd", "ABC", "a1", "", "中文", "abcde"],
    "id": [
        ID_OK[:-1] + ("1" if ID_OK[-1] == "0" else "0"),
        "330102199002300011",
        ID_OK[:17],
        "",
        "abcdefghijklmnopqr",
    ],
    "m": ["12345678901", "1391234567", "139123456789", "", "1391234567a"],
}


TYPED = [
    eng.ColumnSpec("n", "integer", rules=eng.Rules(min=0, max=1000)),
    eng.ColumnSpec("f", "float"),
    eng.ColumnSpec("b", "boolean"),
    eng.ColumnSpec("d", "date", rules=eng.Rules(min="2000-01-01")),
    eng.ColumnSpec("s", rules=eng.Rules(regex="[a-z]{2,4}", max=3)),
    eng.ColumnSpec("id", rules=eng.Rules(id_number=True)),
    eng.ColumnSpec("m", rules=eng.Rules(not_null=True, mobile=True)),
]


@st.composite
def _row(draw: st.DrawFn) -> tuple[str, ...]:
    """A row of canonical valid values with up to two replaced by another spelling or a bad
    value, so that each verdict often hangs on one value."""
    row = [draw(st.sampled_from(GOOD[c.name])) for c in TYPED]
    for k in draw(st.lists(st.integers(0, len(TYPED) - 1), max_size=2)):
        row[k] = draw(st.sampled_from(OTHER[TYPED[k].name]))
    return tuple(row)


def test_arrow_load_judges_every_spelling_like_the_sql_rules(tmp_path: Path, arrow_used: list[str]) -> None:
    """Each other spelling and bad value alone in an otherwise valid row, in one file."""
    base = [GOOD[c.name][0] for c in TYPED]
    rows = [tuple(base)]
    for k, c in enumerate(TYPED):
        for value in GOOD[c.name][1:] + OTHER[c.name]:
            rows.append(tuple(value if j == k else v for j, v in enumerate(base)))
    header = ",".join(c.name for c in TYPED)
    out = _same_arrow(tmp_path, (header + "\n" + "".join(",".join(r) + "\n" for r in rows)).encode(), TYPED)
    assert arrow_used == ["arrow"]
    assert 20 < out["result"]["rejected"] < len(rows) - 10


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(_row(), min_size=1, max_size=30))
def test_arrow_load_agrees_with_the_sql_rules(
    tmp_path_factory: pytest.TempPathFactory, arrow_used: list[str], rows: list[tuple[str, ...]]
) -> None:
    """Whatever mix of canonical, other and bad spellings: the same verdicts, values, reasons."""
    header = ",".join(c.name for c in TYPED)
    content = (header + "\n" + "".join(",".join(r) + "\n" for r in rows)).encode()
    _same_arrow(tmp_path_factory.mktemp("h"), content, TYPED)
    # It read the file itself (only a line of empty fields, read like a blank line, sends
    # the file to the SQL load).
    assert arrow_used[-1] == "arrow" or any(not any(r) for r in rows)
