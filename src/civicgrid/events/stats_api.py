"""JSON statistics of events under /api/v1/stats/events, for the cockpit. Every number carries
its definition key (docs/metrics.md); the reader sees only their region subtree."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query

from civicgrid.accounts.permissions import Permission
from civicgrid.core.auth import Actor
from civicgrid.core.deps import SessionDep, requires
from civicgrid.core.vocab import Platform
from civicgrid.events import stats

router = APIRouter(prefix="/api/v1/stats/events", tags=["statistics"])
Reader = Annotated[Actor, requires(Permission.events_read)]
From = Annotated[
    date | None, Query(alias="from", description="First local date (default: the 1st of this month).")
]
To = Annotated[date | None, Query(alias="to", description="Last local date, included (default: today).")]
CategoryCode = Annotated[str | None, Query(max_length=16, description="Sub-class or big-class code.")]
OrgCode = Annotated[str | None, Query(max_length=64, description="Code of the lead organisation.")]
RegionCode = Annotated[
    str | None, Query(max_length=24, description="A region code inside the reader's scope (default: theirs).")
]


def window_of(first: From = None, last: To = None) -> stats.Window:
    return stats.window(first, last)


def filters_of(
    session: SessionDep, platform: Platform | None = None, category: CategoryCode = None, org: OrgCode = None
) -> stats.Filters:
    return stats.filters(session, platform=platform, category=category, org=org)


# The period and the filters every statistics route takes from the query string.
Win = Annotated[stats.Window, Depends(window_of)]
Filt = Annotated[stats.Filters, Depends(filters_of)]


@router.get("/summary")
def summary(
    session: SessionDep,
    actor: Reader,
    win: Win,
    filt: Filt,
    region: RegionCode = None,
) -> dict[str, Any]:
    """结案率, 按期结案率, handling time, 返工率, 满意率, 层级化解率 of the events accepted in the
    period; today's and this month's flow; events overdue now."""
    return stats.summary(session, actor, win, filt, region=region)


@router.get("/by")
def by(
    session: SessionDep,
    actor: Reader,
    dimension: stats.Dimension,
    win: Win,
    filt: Filt,
    parent: Annotated[
        str | None, Query(max_length=24, description="Region code whose children to compare.")
    ] = None,
    period: stats.Period = stats.Period.day,
    category_level: Literal["sub", "class"] = "sub",
) -> dict[str, Any]:
    """The same metrics per region (children of `parent`), platform, category, lead org or period."""
    return stats.breakdown(
        session,
        actor,
        win,
        dimension,
        filt,
        parent=parent,
        period=period,
        category_level=category_level,
    )


@router.get("/handbacks")
def handbacks(
    session: SessionDep,
    actor: Reader,
    win: Win,
    filt: Filt,
    region: RegionCode = None,
) -> dict[str, Any]:
    """Hand-backs per department in the period, most first."""
    return stats.handbacks(session, actor, win, filt, region=region)


@router.get("/funnel")
def funnel(
    session: SessionDep,
    actor: Reader,
    win: Win,
    filt: Filt,
    region: RegionCode = None,
) -> dict[str, Any]:
    """Events reported in the period by state, and the stages they reached."""
    return stats.funnel(session, actor, win, filt, region=region)


@router.get("/flows")
def flows(
    session: SessionDep,
    actor: Reader,
    win: Win,
    filt: Filt,
    region: RegionCode = None,
) -> dict[str, Any]:
    """Per local day of the period: events reported, accepted and closed."""
    return stats.flows(session, actor, win, filt, region=region)


@router.get("/regions")
def regions(
    session: SessionDep,
    actor: Reader,
    win: Win,
    filt: Filt,
    parent: Annotated[
        str | None, Query(max_length=24, description="Region code whose children to count.")
    ] = None,
) -> dict[str, Any]:
    """Per child region of `parent`: events reported in the period, open now and overdue now."""
    return stats.counts_by_region(session, actor, win, filt, parent=parent)
