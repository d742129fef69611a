"""The disputes capability's cockpit panels: 镇村化解率 against its 90% target, the mediation rates,
cases open now by level, and follow-up calls overdue per org.

Every number comes from `disputes.stats` for the cockpit's region and window (the events filters
— platform, category, lead department — do not apply to mediation cases and are ignored). Each
column names its definition in docs/metrics.md (`extra["docs"]`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from civicgrid.accounts.permissions import Permission
from civicgrid.cockpit.registry import Column, Context, Kind, Panel, PanelData, View, register
from civicgrid.core.i18n import gettext as _
from civicgrid.disputes import stats
from civicgrid.disputes.models import Level
from civicgrid.disputes.service import LEVEL_LABELS

READ = str(Permission.disputes_read)


def N_(message: str) -> str:
    return message


def _docs(**keys: str) -> dict[str, dict[str, str]]:
    return {"docs": {col: stats.anchor(key) for col, key in keys.items()}}


def _pct(ratio: float | None) -> float | None:
    return None if ratio is None else round(ratio * 100, 1)


def _summary(session: Session, ctx: Context) -> dict[str, Any]:
    """One summary per context and interval, shared by the gauge and the rates."""
    return ctx.shared(
        "disputes.summary",
        lambda: stats.summary(session, ctx.actor, ctx.window, region=ctx.region.code, now=ctx.now),
    )


def local_resolution_query(session: Session, ctx: Context) -> PanelData:
    """镇村化解率 of the disputes registered in the window, against the seed's 90% target."""
    s = _summary(session, ctx)
    return PanelData(
        [
            Column("value", _("Village and township resolution rate (镇村化解率)")),
            Column("target", _("Target value")),
        ],
        [[s["metrics"]["local_resolution_rate"], s["targets"]["local_resolution_rate"]]],
        {
            **_docs(value="local_resolution_rate", target="local_resolution_rate"),
            "target": stats.LOCAL_RESOLUTION_TARGET,
        },
    )


RATES = (
    ("mediation_success_rate", N_("Mediation success rate (调解成功率)"), "%"),
    ("resolution_rate", N_("Resolution rate (化解率)"), "%"),
    ("follow_up_satisfaction_rate", N_("Follow-up satisfaction rate (回访满意率)"), "%"),
    ("avg_duration_days", N_("Average duration, working days (平均调处时长)"), "d"),
    ("registered", N_("Disputes registered (受理数)"), ""),
)


def rates_query(session: Session, ctx: Context) -> PanelData:
    m = _summary(session, ctx)["metrics"]
    row = [m[k] if unit != "%" else _pct(m[k]) for k, _label, unit in RATES]
    return PanelData(
        [Column(k, _(label), unit) for k, label, unit in RATES],
        [row],
        _docs(**{k: k for k, _label, _unit in RATES}),
    )


def open_by_level_query(session: Session, ctx: Context) -> PanelData:
    """Cases open now at the village committee, the township centre and the county centre."""
    counts = stats.open_by_level(session, ctx.actor, region=ctx.region.code)
    return PanelData(
        [Column("level", _("Level")), Column("open", _("Open cases"), "cases")],
        [[_(LEVEL_LABELS[lv]), counts[str(lv)]] for lv in (Level.village, Level.township, Level.county)],
        _docs(open="open_now"),
    )


def overdue_follow_ups_query(session: Session, ctx: Context) -> PanelData:
    """Follow-up calls overdue now, per calling org, most first."""
    items = stats.overdue_by_org(session, ctx.actor, region=ctx.region.code, now=ctx.now)
    return PanelData(
        [
            Column("org", _("Organisation")),
            Column("overdue", _("Overdue calls"), "calls"),
            Column("oldest_due", _("Oldest due date")),
            Column("days_late", _("Days late"), "d"),
        ],
        [[i["name"], i["overdue"], i["oldest_due"].isoformat(), i["days_late"]] for i in items[:15]],
        _docs(overdue="follow_ups_overdue"),
    )


register(
    Panel(
        "disputes.local_resolution",
        N_("Disputes settled at village and township level"),
        Kind.gauge,
        local_resolution_query,
        order=67,
        doc=stats.anchor("local_resolution_rate"),
        permission=READ,
    )
)
register(
    Panel(
        "disputes.rates",
        N_("Mediation"),
        Kind.number,
        rates_query,
        order=68,
        width=2,
        doc=stats.anchor("mediation_success_rate"),
        permission=READ,
        views=(View.analytic,),
    )
)
register(
    Panel(
        "disputes.open_by_level",
        N_("Open disputes by level"),
        Kind.bar,
        open_by_level_query,
        order=69,
        doc=stats.anchor("open_now"),
        permission=READ,
    )
)
register(
    Panel(
        "disputes.overdue_follow_ups",
        N_("Overdue follow-up calls"),
        Kind.table,
        overdue_follow_ups_query,
        order=71,
        width=2,
        doc=stats.anchor("follow_ups_overdue"),
        permission=READ,
        views=(View.analytic,),
    )
)
