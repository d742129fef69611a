"""The data platform's cockpit panels: datasets and records gathered, API calls per day, and the
top consumers — for the datasets owned by organisations inside the cockpit's region.

Calls are read from the daily metering table (`Usage`, itself a per-day rollup) plus the counts
the meter holds in memory and has not flushed yet, so a call shows on the cockpit within one
refresh, not one flush later.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from civicgrid.accounts.models import Org
from civicgrid.cockpit.registry import Column, Context, Kind, Panel, PanelData, View, register
from civicgrid.core.i18n import gettext as _
from civicgrid.data import metering
from civicgrid.data.models import ApiKey, Dataset, DatasetState, DataVersion, Usage
from civicgrid.regions.models import Region

DOC = "docs/cockpit.md"
CALL_DAYS = 30
TOP_CONSUMERS = 10


def N_(message: str) -> str:
    """Marks a msgid for extraction; translated where it is shown."""
    return message


def _datasets(session: Session, ctx: Context) -> dict[int, int]:
    """Dataset id → rows of its current version, for the datasets of the region's organisations."""

    def compute() -> dict[int, int]:
        stmt = (
            select(Dataset.id, func.coalesce(DataVersion.rows, 0))
            .join(Org, Org.id == Dataset.owner_org_id)
            .join(Region, Region.id == Org.region_id)
            .outerjoin(DataVersion, DataVersion.id == Dataset.current_version_id)
            .where(
                Region.path.startswith(ctx.region.path, autoescape=True),
                Dataset.state == DatasetState.active,
            )
        )
        return {int(i): int(n) for i, n in session.execute(stmt)}

    return ctx.shared("data.datasets", compute)


def usage(
    session: Session, ctx: Context, first: date, last: date
) -> list[tuple[date, str, int | None, int, int]]:
    """(day, channel, consumer org id or None, calls, rows) for the region's datasets, stored and
    still in the meter."""
    ids = _datasets(session, ctx)
    if not ids:
        return []
    stmt = (
        select(Usage.day, Usage.channel, ApiKey.org_id, func.sum(Usage.calls), func.sum(Usage.rows))
        .outerjoin(ApiKey, ApiKey.id == Usage.key_id)
        .where(Usage.dataset_id.in_(ids), Usage.day >= first, Usage.day <= last)
        .group_by(Usage.day, Usage.channel, ApiKey.org_id)
    )
    found: list[tuple[date, str, int | None, int, int]] = [
        (d, str(ch), org, int(c or 0), int(r or 0)) for d, ch, org, c, r in session.execute(stmt)
    ]
    pending = {
        k: v
        for k, v in metering.meter_for(session.get_bind()).pending().items()
        if k[1] in ids and first <= k[2] <= last
    }
    if pending:
        keys = {k[0] for k in pending if k[0] is not None}
        orgs = dict(session.execute(select(ApiKey.id, ApiKey.org_id).where(ApiKey.id.in_(keys))).all())
        for (key_id, _ds, day, channel), (calls, rows) in pending.items():
            found.append((day, channel, orgs.get(key_id) if key_id else None, calls, rows))
    return found


def overview_query(session: Session, ctx: Context) -> PanelData:
    ids = _datasets(session, ctx)
    used = usage(session, ctx, ctx.window.first, ctx.window.last)
    consumers = {org for _d, _c, org, calls, _r in used if org is not None and calls}
    return PanelData(
        [
            Column("datasets", _("Datasets"), _("datasets")),
            Column("records", _("Records gathered"), _("records")),
            Column("calls", _("Data API calls in the period"), _("calls")),
            Column("consumers", _("Consuming organisations"), _("organisations")),
        ],
        [[len(ids), sum(ids.values()), sum(u[3] for u in used), len(consumers)]],
        {
            "docs": {k: f"{DOC}#data_{k}" for k in ("datasets", "records", "calls", "consumers")},
            "from": ctx.window.first.isoformat(),
            "to": ctx.window.last.isoformat(),
        },
    )


CHANNEL_LABELS = {"api": N_("Data API"), "ckan": N_("CKAN API"), "sandbox": N_("Sandbox")}


def calls_query(session: Session, ctx: Context) -> PanelData:
    last = ctx.window.last
    days = [last - timedelta(days=i) for i in range(CALL_DAYS - 1, -1, -1)]
    per: dict[tuple[date, str], int] = defaultdict(int)
    for day, channel, _org, calls, _rows in usage(session, ctx, days[0], last):
        per[(day, channel)] += calls
    channels = list(metering.CHANNELS)
    rows = [[d.isoformat(), *(per[(d, ch)] for ch in channels)] for d in days]
    return PanelData(
        [Column("date", _("Date")), *(Column(ch, _(CHANNEL_LABELS[ch]), _("calls")) for ch in channels)],
        rows,
        {"docs": {ch: f"{DOC}#data_calls" for ch in channels}},
    )


def consumers_query(session: Session, ctx: Context) -> PanelData:
    calls: dict[int | None, list[int]] = defaultdict(lambda: [0, 0])
    for _day, _channel, org, n, rows in usage(session, ctx, ctx.window.first, ctx.window.last):
        calls[org][0] += n
        calls[org][1] += rows
    names: dict[Any, str] = dict(
        session.execute(select(Org.id, Org.name).where(Org.id.in_([o for o in calls if o]))).all()
    )
    names[None] = _("Without a key (sandbox, signed-in readers)")
    top = sorted(calls.items(), key=lambda kv: (-kv[1][0], names.get(kv[0], "")))[:TOP_CONSUMERS]
    return PanelData(
        [
            Column("org", _("Consumer")),
            Column("calls", _("Calls"), _("calls")),
            Column("rows", _("Records read"), _("records")),
        ],
        [[names.get(org, ""), v[0], v[1]] for org, v in top],
        {"docs": {"calls": f"{DOC}#data_calls", "rows": f"{DOC}#data_calls"}},
    )


register(
    Panel(
        "data.overview",
        N_("Data platform"),
        Kind.number,
        overview_query,
        order=90,
        width=2,
        doc=f"{DOC}#data_datasets",
        views=(View.analytic,),
    )
)
register(
    Panel(
        "data.calls",
        N_("Data API calls per day"),
        Kind.line,
        calls_query,
        order=91,
        width=2,
        doc=f"{DOC}#data_calls",
    )
)
register(
    Panel(
        "data.consumers",
        N_("Top data consumers"),
        Kind.ranking,
        consumers_query,
        order=92,
        doc=f"{DOC}#data_consumers",
        views=(View.analytic,),
    )
)
