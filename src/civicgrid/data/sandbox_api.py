"""JSON routes of the sandbox (数据沙箱) and the unified search (统一检索) under /api/v1/data."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.encoders import jsonable_encoder

from civicgrid.accounts.permissions import Permission
from civicgrid.core.auth import Actor
from civicgrid.core.deps import OptionalActor, SessionDep, requires
from civicgrid.core.errors import AppError
from civicgrid.core.pagination import PageDep, paginate
from civicgrid.data import sandbox, search
from civicgrid.data.models import OpenClass, ShareClass, Theme
from civicgrid.data.schemas import (
    FacetValueOut,
    SandboxFunctionsOut,
    SandboxIn,
    SandboxQueryOut,
    SandboxQueryPage,
    SandboxResultOut,
    SearchHitOut,
    SearchOut,
)

router = APIRouter(prefix="/api/v1/data", tags=["data sandbox and search"])
P = Permission


@router.get("/search", response_model=SearchOut)
def search_catalogue(
    session: SessionDep,
    actor: OptionalActor,
    q: Annotated[str, Query(max_length=200)] = "",
    org: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    theme: Theme | None = None,
    share_class: ShareClass | None = None,
    open_class: OpenClass | None = None,
    tag: Annotated[str, Query(max_length=50)] = "",
    sort: Annotated[str, Query(pattern="^(relevance|name|title|newest)$")] = "relevance",
    page: Annotated[int, Query(ge=1, le=10_000)] = 1,
    size: Annotated[int, Query(ge=1, le=100)] = 20,
) -> SearchOut:
    """One search over titles, descriptions, tags and field names (Chinese tokenised), ranked,
    with facet counts; without a login only open datasets are found."""
    filters = {
        "org": str(org) if org else "",
        "theme": str(theme or ""),
        "share_class": str(share_class or ""),
        "open_class": str(open_class or ""),
        "tag": tag,
    }
    result = search.search(
        session, actor, q, filters=filters, offset=(page - 1) * size, limit=size, sort=sort
    )
    return SearchOut(
        q=q,
        terms=result.terms,
        total=result.total,
        page=page,
        size=size,
        items=[
            SearchHitOut(
                name=h.doc.name,
                title=h.doc.title,
                title_en=h.doc.title_en,
                description=h.doc.description,
                org_id=h.doc.org_id,
                theme=h.doc.theme,
                share_class=h.doc.share_class,
                open_class=h.doc.open_class,
                tags=h.doc.tags,
                fields=h.doc.fields,
                score=round(h.score, 4),
            )
            for h in result.hits
        ],
        facets={k: [FacetValueOut(**v) for v in vals] for k, vals in result.facets.items()},
    )


@router.post("/sandbox/queries", response_model=SandboxResultOut)
def run_sandbox_query(
    body: SandboxIn, session: SessionDep, actor: Annotated[Actor, requires(P.data_apply)]
) -> SandboxResultOut:
    """Run one aggregate query over the datasets your organisation may use in the sandbox."""
    try:
        result = sandbox.run_query(session, actor, body.sql)
    except AppError:
        session.commit()  # the refusal (or timeout) stays in the log and the audit
        raise
    return SandboxResultOut(
        id=result.query_id,
        columns=result.columns,
        rows=jsonable_encoder(result.rows),
        suppressed_groups=result.suppressed,
        truncated=result.truncated,
        millis=result.millis,
    )


@router.get("/sandbox/queries", response_model=SandboxQueryPage)
def sandbox_history(
    session: SessionDep, params: PageDep, actor: Annotated[Actor, requires(P.data_apply)]
) -> SandboxQueryPage:
    """Your own sandbox queries and their outcomes, newest first."""
    items, total = paginate(session, sandbox.history_stmt(actor), params)
    return SandboxQueryPage(
        items=[
            SandboxQueryOut(
                id=q.id,
                sql=q.sql,
                datasets=json.loads(q.datasets or "[]"),
                outcome=q.outcome,
                reason=q.reason,
                rows_out=q.rows_out,
                suppressed_groups=q.suppressed_groups,
                millis=q.millis,
                at=q.at,
            )
            for q in items
        ],
        total=total,
        page=params.page,
        size=params.size,
    )


@router.get("/sandbox/functions", response_model=SandboxFunctionsOut)
def sandbox_functions(actor: Annotated[Actor, requires(P.data_apply)]) -> SandboxFunctionsOut:
    """The functions a sandbox query may use."""
    return SandboxFunctionsOut(**sandbox.allowed_functions())
