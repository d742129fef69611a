"""The risk loop's cockpit panels: open warnings by level (and overdue), open warnings per child
region by level, warnings raised and closed in the window with the share of real risks, and each
rule's precision. Aggregates in SQL over the warning table (hundreds to thousands of rows, not
millions), inside the context's region subtree."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from civicgrid.accounts.permissions import Permission
from civicgrid.cockpit.registry import Column, Context, Kind, Panel, PanelData, View, register
from civicgrid.core.db import utcnow
from civicgrid.core.i18n import gettext as _
from civicgrid.regions.models import Region
from civicgrid.risks.models import LEVEL_LABELS, LEVELS_DESC, RiskRule, Verdict, Warning, WarningState

DOC = "docs/risks.md"
RULE_ROWS = 10


def N_(message: str) -> str:
    """Marks a msgid for extraction; translated where it is shown."""
    return message


def _in(ctx: Context) -> Any:
    return Warning.region_path.startswith(ctx.region.path)


def by_level_query(session: Session, ctx: Context) -> PanelData:
    now = ctx.now or utcnow()
    rows = dict(
        session.execute(
            select(Warning.level, func.count())
            .where(_in(ctx), Warning.state != WarningState.closed)
            .group_by(Warning.level)
        ).all()
    )
    overdue = session.scalar(
        select(func.count()).where(_in(ctx), Warning.state != WarningState.closed, Warning.due_at < now)
    )
    columns = [Column(str(lv), _(LEVEL_LABELS[lv]), _("warnings")) for lv in LEVELS_DESC]
    columns.append(Column("overdue", _("Overdue"), _("warnings")))
    return PanelData(
        columns,
        [[int(rows.get(lv, 0)) for lv in LEVELS_DESC] + [int(overdue or 0)]],
        {"docs": {c.key: f"{DOC}#risk_open_warnings" for c in columns}},
    )


def by_region_query(session: Session, ctx: Context) -> PanelData:
    """Open warnings of each child region (and of the region itself), one series per level."""
    children = list(
        session.scalars(select(Region).where(Region.parent_id == ctx.region.id).order_by(Region.code))
    )
    counts = session.execute(
        select(Warning.region_path, Warning.level, func.count())
        .where(_in(ctx), Warning.state != WarningState.closed)
        .group_by(Warning.region_path, Warning.level)
    ).all()
    rows = []
    for r in [ctx.region, *children]:
        per = {str(lv): 0 for lv in LEVELS_DESC}
        for path, level, n in counts:
            if (r is ctx.region and path == r.path) or (r is not ctx.region and path.startswith(r.path)):
                per[str(level)] += int(n)
        name = r.name if r is not ctx.region else f"{r.name}（{_('itself')}）"
        if r is ctx.region and not sum(per.values()):
            continue
        rows.append([name, *(per[str(lv)] for lv in LEVELS_DESC)])
    columns = [Column("region", _("Region"))] + [
        Column(str(lv), _(LEVEL_LABELS[lv]), _("warnings")) for lv in LEVELS_DESC
    ]
    return PanelData(columns, rows, {"stack": True, "docs": {"region": f"{DOC}#risk_open_warnings"}})


def loop_query(session: Session, ctx: Context) -> PanelData:
    """The loop in the window: warnings raised, closed, closed as real risks, and precision."""
    w = ctx.window
    raised = session.scalar(
        select(func.count()).where(_in(ctx), Warning.raised_at >= w.start, Warning.raised_at < w.end)
    )
    closed = session.execute(
        select(Warning.verdict, func.count())
        .where(_in(ctx), Warning.closed_at >= w.start, Warning.closed_at < w.end)
        .group_by(Warning.verdict)
    ).all()
    by = {str(v): int(n) for v, n in closed}
    total = sum(by.values())
    real = by.get(str(Verdict.real), 0)
    columns = [
        Column("raised", _("Warnings raised"), _("warnings")),
        Column("closed", _("Warnings closed"), _("warnings")),
        Column("real", _("Closed as real risks"), _("warnings")),
        Column("precision", _("Precision"), "%"),
    ]
    precision = round(real / total * 100, 1) if total else None
    docs = {c.key: f"{DOC}#risk_{c.key}" for c in columns}
    return PanelData(columns, [[int(raised or 0), total, real, precision]], {"docs": docs})


def rules_query(session: Session, ctx: Context) -> PanelData:
    """Rules by precision over their closed warnings in the region (worst first: fix those)."""
    rows = session.execute(
        select(RiskRule.id, RiskRule.name, Warning.verdict, func.count())
        .join(Warning, Warning.rule_id == RiskRule.id)
        .where(_in(ctx), Warning.state == WarningState.closed)
        .group_by(RiskRule.id, RiskRule.name, Warning.verdict)
    ).all()
    per: dict[int, list[Any]] = {}
    for rule_id, name, verdict, n in rows:
        entry = per.setdefault(rule_id, [name, 0, 0])
        entry[1 if verdict == Verdict.real else 2] += int(n)
    table = []
    for rule_id, (name, real, false) in per.items():
        closed = real + false
        table.append(
            [name, round(real / closed * 100, 1) if closed else None, closed, f"/risks/rules/{rule_id}"]
        )
    table.sort(key=lambda r: (r[1] if r[1] is not None else 101, r[0]))
    columns = [
        Column("rule", _("Rule")),
        Column("precision", _("Precision"), "%"),
        Column("closed", _("Warnings closed"), _("warnings")),
        Column("url", "url"),
    ]
    return PanelData(columns, table[:RULE_ROWS], {"docs": {"precision": f"{DOC}#risk_precision"}})


P = Permission
register(
    Panel(
        "risks.by_level",
        N_("Open risk warnings"),
        Kind.number,
        by_level_query,
        order=60,
        width=2,
        doc=f"{DOC}#risk_open_warnings",
        permission=P.risks_read,
    )
)
register(
    Panel(
        "risks.by_region",
        N_("Open risk warnings by region"),
        Kind.bar,
        by_region_query,
        order=61,
        width=2,
        doc=f"{DOC}#risk_open_warnings",
        permission=P.risks_read,
    )
)
register(
    Panel(
        "risks.loop",
        N_("The risk loop in the period"),
        Kind.number,
        loop_query,
        order=62,
        width=1,
        doc=f"{DOC}#risk_precision",
        permission=P.risks_read,
    )
)
register(
    Panel(
        "risks.rules",
        N_("Precision of the risk rules"),
        Kind.table,
        rules_query,
        order=63,
        views=(View.analytic,),
        width=1,
        doc=f"{DOC}#risk_precision",
        permission=P.risks_read,
    )
)
