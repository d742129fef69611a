"""Pages of the digital cockpit: the light analytic view with filters and the dark full-screen
big screen, for a city, county or township of the reader's scope. Thin: the panels' answers come
from `cockpit.service` (the same cached answers the JSON API gives); the page draws them and asks
for fresh ones every few seconds."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.orm import Session

from civicgrid.cockpit import service
from civicgrid.cockpit.api import Ctx
from civicgrid.cockpit.registry import Context, View
from civicgrid.core.auth import Actor
from civicgrid.core.db import utcnow
from civicgrid.core.deps import SessionDep, requires
from civicgrid.core.i18n import gettext as _
from civicgrid.core.web import render
from civicgrid.events import stats
from civicgrid.events.models import STATE_LABELS, State
from civicgrid.regions import service as regions

router = APIRouter(include_in_schema=False)
Reader = Annotated[Actor, requires(service.READ)]


@router.get("/cockpit")
def cockpit_home(session: SessionDep, actor: Reader) -> Response:
    """The reader's own cockpit (their org's region)."""
    region = service.cockpit_region(session, actor)
    return RedirectResponse(f"/cockpit/{region.code}", status_code=303)


def _query(ctx: Context) -> dict[str, str]:
    q = {"from": ctx.window.first.isoformat(), "to": ctx.window.last.isoformat()}
    for k in ("platform", "category", "org"):
        if v := getattr(ctx, k):
            q[k] = v
    return q


def _presets(ctx: Context) -> list[tuple[str, str, bool]]:
    """Quick periods: label, query string, chosen."""
    today = stats.window(now=utcnow()).last
    spans = [
        (_("Today"), today, today),
        (_("Last 7 days"), today - timedelta(days=6), today),
        (_("This month"), today.replace(day=1), today),
        (_("Last 30 days"), today - timedelta(days=29), today),
        (_("This year"), today.replace(month=1, day=1), today),
    ]
    base = {k: v for k, v in _query(ctx).items() if k not in ("from", "to")}
    return [
        (
            label,
            urlencode({**base, "from": a.isoformat(), "to": b.isoformat()}),
            (a, b) == (ctx.window.first, ctx.window.last),
        )
        for label, a, b in spans
    ]


def _page(session: Session, actor: Actor, ctx: Context, view: View) -> dict[str, Any]:
    region = service.cockpit_region(session, actor, ctx.region.code)
    panels = service.visible_panels(actor, view)
    data = service.compute_many(session, panels, ctx)
    chain = [*regions.ancestors(session, region), region]
    children = [c for c in regions.children(session, actor, region.code) if c.level in service.LEVELS]
    query = _query(ctx)
    return {
        "region": region,
        "title": _(service.LEVEL_TITLES[region.level]),
        "crumbs": [r for r in chain if actor.in_scope(r.path)],
        "children": children,
        "panels": [data[p.key] for p in panels],
        "view": str(view),
        "ctx": ctx,
        "query": urlencode(query),
        "filters": query,
        "refresh": service.POLL_SECONDS,
        "as_of": service.as_of(),
        "initial": {"panels": data},
        "state_labels": {str(s): _(STATE_LABELS[s]) for s in State},
    }


@router.get("/cockpit/{code}")
def analytic_page(request: Request, session: SessionDep, actor: Reader, ctx: Ctx) -> Response:
    """The light analytic view: filters (period, platform, category, department) and every panel."""
    page = _page(session, actor, ctx, View.analytic)
    return render(
        request,
        "cockpit/analytic.html",
        **page,
        options=service.filter_options(session, actor),
        presets=_presets(ctx),
    )


@router.get("/cockpit/{code}/screen")
def screen_page(request: Request, session: SessionDep, actor: Reader, ctx: Ctx) -> Response:
    """The dark full-screen big screen (laid out for 1920×1080, readable across a room)."""
    return render(request, "cockpit/screen.html", **_page(session, actor, ctx, View.screen))
