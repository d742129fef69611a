"""A panel's table as CSV or Excel: the columns and rows the page draws, nothing else, so a file
shows exactly what the chart shows (and, like the chart, only the reader's own region)."""

from __future__ import annotations

import csv
import io
import re
from typing import Any

from openpyxl import Workbook
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

FORMATS = {
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}
BOM = "\ufeff"  # Excel opens UTF-8 CSV with Chinese text correctly only with a byte-order mark


def header(panel: dict[str, Any]) -> list[str]:
    return [f"{c['label']} ({c['unit']})" if c["unit"] else c["label"] for c in panel["columns"]]


def _safe(value: Any) -> Any:
    """Formula injection: text beginning with = + - @ would be run by a spreadsheet."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return "" if value is None else value


def csv_bytes(panel: dict[str, Any]) -> bytes:
    buf = io.StringIO()
    buf.write(BOM)
    w = csv.writer(buf)
    w.writerow(header(panel))
    for row in panel["rows"]:
        w.writerow([_safe(v) for v in row])
    return buf.getvalue().encode("utf-8")


def xlsx_bytes(panel: dict[str, Any]) -> bytes:
    wb = Workbook()
    ws = wb.active
    assert ws is not None
    ws.title = re.sub(r"[\[\]:*?/\\]", " ", panel["title"])[:31] or "panel"
    ws.append(header(panel))
    for row in panel["rows"]:
        cells = []
        for v in row:
            if isinstance(v, str):
                v = ILLEGAL_CHARACTERS_RE.sub("", v)
            cells.append(v)
        ws.append(cells)
        for cell in ws[ws.max_row]:
            if isinstance(cell.value, str):
                cell.data_type = "s"  # never a formula, whatever the text starts with
    for i, col in enumerate(ws.columns, start=1):
        width = max(len(str(c.value or "")) for c in col)
        ws.column_dimensions[col[0].column_letter].width = min(60, max(8, width * 2 if i == 1 else width + 4))
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


def filename(panel: dict[str, Any], region_code: str, first: str, last: str, ext: str) -> str:
    return f"cockpit-{region_code}-{panel['key']}-{first}-{last}.{ext}"
