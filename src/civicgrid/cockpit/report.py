"""The whole cockpit as a one-page PDF report for a meeting: the figures, then every chart panel
as a small table (line charts as a small chart), for a chosen period and the reader's region.

It draws the same panel answers the pages show (`service.compute_many`), so the report's numbers
are the cockpit's numbers. Everything is put in one frame that shrinks to fit a landscape A4
page, however many panels the modules register.
"""

from __future__ import annotations

import io
from typing import Any
from xml.sax.saxutils import escape

from reportlab.graphics.charts.legends import Legend
from reportlab.graphics.charts.lineplots import LinePlot
from reportlab.graphics.shapes import Drawing, String
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4, landscape
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.platypus import KeepInFrame, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

from civicgrid.core.i18n import gettext as _
from civicgrid.core.pdf import cjk_font, styles

TABLE_ROWS = 6  # rows of a panel's table in the report
LIST_ROWS = 4
SERIES_COLOURS = [colors.HexColor(c) for c in ("#1d4f91", "#2f9e44", "#e8590c", "#862e9c", "#c92a2a")]
COLUMNS_PER_ROW = 4
LINE = colors.HexColor("#d9e2ec")
BOXED = [("BOX", (0, 0), (-1, -1), 0.25, LINE), ("INNERGRID", (0, 0), (-1, -1), 0.25, LINE)]


def _fmt(value: Any, unit: str) -> str:
    if value is None or value == "":
        return "—"
    if unit == "%":
        return f"{value:.1f}%"
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _style(size: float, bold: bool = False, colour: Any = colors.black) -> ParagraphStyle:
    return ParagraphStyle(
        f"s{size}{bold}",
        parent=styles()["Normal"],
        fontName=cjk_font(),
        fontSize=size,
        leading=size * 1.25,
        textColor=colour,
        wordWrap="CJK",
    )


def _p(text: Any, size: float = 7, **kw: Any) -> Paragraph:
    return Paragraph(escape(str(text)), _style(size, **kw))


def _figures(panels: list[dict[str, Any]], width: float) -> Table | None:
    cells: list[Any] = []
    for p in panels:
        row = p["rows"][0] if p.get("rows") else []
        for col, value in zip(p["columns"], row, strict=False):
            unit = col["unit"]
            cells.append(
                [_p(_fmt(value, unit), 12, colour=colors.HexColor("#1d4f91")), _p(col["label"], 6.5)]
            )
    if not cells:
        return None
    per_row = 12
    grid = [cells[i : i + per_row] for i in range(0, len(cells), per_row)]
    grid[-1] += [""] * (per_row - len(grid[-1]))
    t = Table(
        [[Table([[c[0]], [c[1]]]) if c else "" for c in line] for line in grid],
        colWidths=[width / per_row] * per_row,
    )
    t.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), *BOXED]))
    return t


def _line_chart(p: dict[str, Any], width: float) -> Drawing:
    cols = p["columns"][1:]
    rows = p["rows"]
    d = Drawing(width, 95)
    lp = LinePlot()
    lp.x, lp.y, lp.width, lp.height = 28, 22, width - 40, 62
    lp.data = [[(i, r[j + 1] or 0) for i, r in enumerate(rows)] for j in range(len(cols))]
    for j in range(len(cols)):
        lp.lines[j].strokeColor = SERIES_COLOURS[j % len(SERIES_COLOURS)]
        lp.lines[j].strokeWidth = 1
    lp.xValueAxis.valueMin, lp.xValueAxis.valueMax = 0, max(1, len(rows) - 1)
    lp.xValueAxis.valueSteps = [0, max(0, len(rows) - 1)]
    lp.xValueAxis.labelTextFormat = lambda i: str(rows[int(i)][0])[5:] if rows else ""
    for axis in (lp.xValueAxis, lp.yValueAxis):
        axis.labels.fontName = cjk_font()
        axis.labels.fontSize = 5.5
    lp.yValueAxis.valueMin = 0
    d.add(lp)
    legend = Legend()
    legend.x, legend.y = 30, 8
    legend.fontName, legend.fontSize = cjk_font(), 5.5
    legend.columnMaximum, legend.deltax, legend.dx, legend.dy = 1, 55, 6, 4
    legend.alignment = "right"
    legend.colorNamePairs = [
        (SERIES_COLOURS[j % len(SERIES_COLOURS)], c["label"]) for j, c in enumerate(cols)
    ]
    d.add(legend)
    total = [sum((r[j + 1] or 0) for r in rows) for j in range(len(cols))]
    d.add(
        String(
            28,
            88,
            "  ".join(f"{c['label']} {t:,}" for c, t in zip(cols, total, strict=True)),
            fontName=cjk_font(),
            fontSize=6,
        )
    )
    return d


def _table(p: dict[str, Any], width: float) -> Any:
    wide = set((p.get("extra") or {}).get("wide", []))  # what the big screen leaves out, so does paper
    keep = [i for i, c in enumerate(p["columns"]) if c["key"] not in ("url", "code") and c["key"] not in wide]
    keep = keep[:5]
    rows = p["rows"][: LIST_ROWS if p["kind"] == "table" else TABLE_ROWS]
    if p["kind"] == "map":
        rows = sorted(p["rows"], key=lambda r: -(r[2] or 0))[:TABLE_ROWS]
    if p["kind"] == "gauge" and rows:
        value, target = (rows[0] + [None])[:2]
        text = _(
            "{value} (target {target})",
            value=_fmt(None if value is None else value * 100, "%"),
            target=_fmt(None if target is None else target * 100, "%"),
        )
        return _p(text, 11, colour=colors.HexColor("#1d4f91"))
    head = [_p(p["columns"][i]["label"], 6, bold=True) for i in keep]
    body = [[_p(_fmt(r[i], p["columns"][i]["unit"]), 6) for i in keep] for r in rows]
    if not body:
        body = [[_p(_("Nothing in this period."), 6)] + [""] * (len(keep) - 1)]
    first = width * (0.5 if p["kind"] == "table" else 0.4) if len(keep) > 1 else width
    rest = (width - first) / max(1, len(keep) - 1)
    t = Table([head, *body], colWidths=[first] + [rest] * (len(keep) - 1), repeatRows=1)
    t.setStyle(
        TableStyle(
            [
                ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#f0f4f8")),
                ("LINEBELOW", (0, 0), (-1, -1), 0.25, colors.HexColor("#d9e2ec")),
                ("TOPPADDING", (0, 0), (-1, -1), 1),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 1),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
            ]
        )
    )
    return t


def render_pdf(*, title: str, subtitle: str, panels: list[dict[str, Any]]) -> bytes:
    """One landscape A4 page: title, figures, then the other panels four to a row."""
    buf = io.BytesIO()
    page_w, page_h = landscape(A4)
    margin = 10 * mm
    doc = SimpleDocTemplate(
        buf,
        pagesize=landscape(A4),
        leftMargin=margin,
        rightMargin=margin,
        topMargin=margin,
        bottomMargin=margin,
        title=title,
        author="CivicGrid",
    )
    width = page_w - 2 * margin
    ok = [p for p in panels if "error" not in p]
    story: list[Any] = [
        _p(title, 15, bold=True),
        _p(subtitle, 7.5, colour=colors.HexColor("#52606d")),
        Spacer(1, 4),
    ]
    figures = _figures([p for p in ok if p["kind"] == "number"], width)
    if figures is not None:
        story += [figures, Spacer(1, 6)]
    cell_w = width / COLUMNS_PER_ROW - 6
    cells: list[Any] = []
    for p in ok:
        if p["kind"] == "number":
            continue
        body = _line_chart(p, cell_w) if p["kind"] == "line" and p["rows"] else _table(p, cell_w)
        cells.append([_p(p["title"], 8, bold=True), body])
    grid = [cells[i : i + COLUMNS_PER_ROW] for i in range(0, len(cells), COLUMNS_PER_ROW)]
    if grid:
        grid[-1] += [""] * (COLUMNS_PER_ROW - len(grid[-1]))
        t = Table(
            [[Table([[c[0]], [c[1]]]) if c else "" for c in line] for line in grid],
            colWidths=[width / COLUMNS_PER_ROW] * COLUMNS_PER_ROW,
        )
        t.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), *BOXED]))
        story.append(t)
    footer = _("Definitions of every number: docs/metrics.md and docs/cockpit.md. Generated by CivicGrid.")
    story += [Spacer(1, 4), _p(footer, 6, colour=colors.HexColor("#829ab1"))]
    doc.build([KeepInFrame(width, page_h - 2 * margin - 2, story, mode="shrink")])
    return buf.getvalue()
