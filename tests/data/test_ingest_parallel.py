"""The parallel CSV load against the one-pass load: same rows in the same order, same rejects
with the same lines, reasons and raw values, same quality report — whichever way the parallel
load finds its rejects' lines (by their text, or by a second read that numbers records)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

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


def _load(tmp: Path, content: bytes, threads: int, **source: Any) -> dict[str, Any]:
    """Load `content` with an engine of `threads` threads (1: the one-pass load) and read
    everything back: the result, the valid rows in stored order, the rejected rows."""
    e = eng.Engine(tmp / f"data-{threads}", threads=threads)
    path = tmp / f"in-{threads}.csv"
    path.write_bytes(content)
    cluster = source.pop("cluster", ())
    columns = COLUMNS
    if source.get("header") is False:  # DuckDB names the columns column0, column1, …
        names = HEADER.split(",")
        columns = [eng.ColumnSpec(c.name, c.type, f"column{names.index(c.name)}", c.rules) for c in COLUMNS]
    staging = e.staging_dir("people")
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
