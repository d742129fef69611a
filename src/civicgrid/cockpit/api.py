"""JSON of the digital cockpit under /api/v1/cockpit: the panels a reader may see, every panel's
answer for a region, one panel (the map's drill-down), exports as CSV/Excel and the PDF report.

All answers are about the reader's region subtree only: a region outside it is a 404."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import Response

from civicgrid.cockpit import export, report, service
from civicgrid.cockpit.registry import Context, View
from civicgrid.core.auth import Actor
from civicgrid.core.deps import SessionDep, requires
from civicgrid.core.i18n import gettext as _

router = APIRouter(prefix="/api/v1/cockpit", tags=["cockpit"])
Reader = Annotated[Actor, requires(service.READ)]
Code = Annotated[str, Path(max_length=24, pattern=r"^\d{1,24}$", description="Region code.")]


def context_of(
    session: SessionDep,
    actor: Reader,
    code: Code,
    first: Annotated[
        date | None, Query(alias="from", description="First local date (default: the 1st of this month).")
    ] = None,
    last: Annotated[
        date | None, Query(alias="to", description="Last local date, included (default: today).")
    ] = None,
    platform: Annotated[
        str | None, Query(max_length=16, description="safety, market, enforcement or service.")
    ] = None,
    category: Annotated[str | None, Query(max_length=16, description="Sub-class or big-class code.")] = None,
    org: Annotated[str | None, Query(max_length=64, description="Lead department's org code.")] = None,
) -> Context:
    """The region (any level inside the reader's scope) with the period and filters checked."""
    from civicgrid.regions import service as regions

    region = regions.get_in_scope(session, actor, code)
    return service.context_for(
        session, actor, region, first=first, last=last, platform=platform, category=category, org=org
    )


Ctx = Annotated[Context, Depends(context_of)]


def _header(ctx: Context) -> dict[str, Any]:
    r = ctx.region
    return {
        "region": {"code": r.code, "name": r.name, "name_en": r.name_en, "level": str(r.level)},
        "from": ctx.window.first.isoformat(),
        "to": ctx.window.last.isoformat(),
        "filters": {"platform": ctx.platform, "category": ctx.category, "org": ctx.org},
        "as_of": service.as_of(),
        "refresh_seconds": service.POLL_SECONDS,
    }


@router.get("/panels")
def list_panels(actor: Reader, view: View | None = None) -> list[dict[str, Any]]:
    """The panels this reader may see (every module's registered panels), in order."""
    return [
        {
            "key": p.key,
            "title": _(p.title),
            "kind": str(p.kind),
            "width": p.width,
            "views": [str(v) for v in p.views],
            "doc": p.doc,
        }
        for p in service.visible_panels(actor, view)
    ]


@router.get("/{code}/data")
def data(session: SessionDep, actor: Reader, ctx: Ctx, view: View = View.screen) -> dict[str, Any]:
    """Every panel of a view for a city, county or township of the reader's scope. Each panel is
    computed once per interval for every viewer of the same scope and filters."""
    service.cockpit_region(session, actor, ctx.region.code)
    panels = service.compute_many(session, service.visible_panels(actor, view), ctx)
    return {**_header(ctx), "view": str(view), "panels": panels}


@router.get("/{code}/panels/{key}")
def panel(session: SessionDep, actor: Reader, ctx: Ctx, key: str) -> dict[str, Any]:
    """One panel for any region of the reader's scope (the map drills down to villages and grids)."""
    p = service.get_panel(actor, key)
    return {**_header(ctx), **service.compute(session, p, ctx)}


@router.get("/{code}/panels/{key}/export")
def export_panel(
    session: SessionDep, actor: Reader, ctx: Ctx, key: str, format: Literal["csv", "xlsx"] = "csv"
) -> Response:
    """The panel's table as CSV (UTF-8 with BOM) or Excel: exactly the rows the chart draws."""
    p = service.compute(session, service.get_panel(actor, key), ctx)
    body = export.csv_bytes(p) if format == "csv" else export.xlsx_bytes(p)
    name = export.filename(
        p, ctx.region.code, ctx.window.first.isoformat(), ctx.window.last.isoformat(), format
    )
    return Response(body, media_type=export.FORMATS[format], headers=_attachment(name))


def _attachment(name: str) -> dict[str, str]:
    return {
        "Content-Disposition": f"attachment; filename*=UTF-8''{quote(name)}",
        "Cache-Control": "private, no-store",
    }


@router.get("/{code}/report.pdf")
def report_pdf(session: SessionDep, actor: Reader, ctx: Ctx) -> Response:
    """The whole cockpit of a city, county or township as a one-page PDF for the chosen period."""
    region = service.cockpit_region(session, actor, ctx.region.code)
    panels = service.compute_many(session, service.visible_panels(actor, View.analytic), ctx)
    title = _("{region}: digital cockpit report", region=region.name)
    subtitle = service.report_subtitle(session, ctx)
    body = report.render_pdf(title=title, subtitle=subtitle, panels=list(panels.values()))
    name = f"cockpit-{region.code}-{ctx.window.first.isoformat()}-{ctx.window.last.isoformat()}.pdf"
    return Response(body, media_type="application/pdf", headers=_attachment(name))
