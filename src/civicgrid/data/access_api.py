"""JSON routes of 统一申请 and 统一供需 under /api/v1/data: applications, the approvals inbox,
grants, API keys, usage for charts, and the keyed data query endpoint."""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, status
from pydantic import BaseModel, ConfigDict, Field

from civicgrid.accounts.permissions import Permission
from civicgrid.core.auth import Actor
from civicgrid.core.deps import SessionDep, requires
from civicgrid.core.errors import Invalid
from civicgrid.core.pagination import PageDep, paginate
from civicgrid.data import access, keys, metering
from civicgrid.data.models import ApiKey, ApplicationState

router = APIRouter(prefix="/api/v1/data", tags=["data access"])
P = Permission


# ---- shapes -----------------------------------------------------------------------------------


class ConditionIn(BaseModel):
    field: str = Field(max_length=64)
    op: str = Field(default="eq", max_length=16)
    value: Any = None


class ApplicationIn(BaseModel):
    dataset: str = Field(max_length=100)
    purpose: str = Field(max_length=2000)
    fields: list[str] = Field(max_length=500)
    row_filter: list[ConditionIn] = Field(default_factory=list, max_length=access.MAX_FILTER_CONDITIONS)
    mode: Literal["api", "sandbox"] = "api"
    until: date


class GrantOut(BaseModel):
    id: int
    application_id: int
    dataset_id: int
    consumer_org_id: int
    fields: list[str]
    clear_fields: list[str]
    row_filter: list[dict[str, Any]]
    mode: str
    quota_rows_per_day: int
    rate_per_minute: int
    expires_at: datetime
    revoked_at: datetime | None
    live: bool


class ApplicationOut(BaseModel):
    id: int
    dataset: str
    dataset_title: str
    owner_org_id: int | None
    consumer_org_id: int
    applicant: str
    purpose: str
    fields: list[str]
    row_filter: list[dict[str, Any]]
    mode: str
    until: date
    state: str
    decided_by: str
    decision_reason: str
    created_at: datetime
    grant: GrantOut | None


class ApplicationPage(BaseModel):
    items: list[ApplicationOut]
    total: int
    page: int
    size: int


class ApproveIn(BaseModel):
    """Everything optional: an empty body approves as asked, with personal fields masked."""

    fields: list[str] | None = Field(default=None, max_length=500)
    extra_filter: list[ConditionIn] = Field(default_factory=list, max_length=access.MAX_FILTER_CONDITIONS)
    clear_fields: list[str] = Field(default_factory=list, max_length=500)
    until: date | None = None
    mode: Literal["api", "sandbox"] | None = None
    quota_rows_per_day: int | None = Field(default=None, ge=1, le=access.MAX_QUOTA_ROWS)
    rate_per_minute: int | None = Field(default=None, ge=1, le=access.MAX_RATE_PER_MINUTE)
    reason: str = Field(default="", max_length=2000)


class ReasonIn(BaseModel):
    reason: str = Field(max_length=2000)


class KeyIn(BaseModel):
    name: str = Field(max_length=100)
    days: int = Field(default=365, ge=1, le=keys.MAX_DAYS)


class KeyOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    org_id: int
    name: str
    prefix: str
    created_by: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    live: bool


class KeyCreated(KeyOut):
    key: str = Field(description="The clear key: shown this once, stored only as a hash.")


class QueryIn(BaseModel):
    fields: list[str] = Field(default_factory=list, max_length=500)
    filters: list[ConditionIn] | dict[str, Any] = Field(default_factory=list)
    sort: list[str] | str = Field(default_factory=list)
    q: str = Field(default="", max_length=200)
    limit: int = Field(default=access.DEFAULT_LIMIT, ge=0, le=access.MAX_LIMIT)
    offset: int = Field(default=0, ge=0, le=10**9)
    include_total: bool = True


class QueryFieldOut(BaseModel):
    name: str
    type: str
    masked: bool


class QuotaOut(BaseModel):
    rows_per_day: int
    used: int
    remaining: int


class QueryOut(BaseModel):
    dataset: str
    fields: list[QueryFieldOut]
    records: list[dict[str, Any]]
    total: int | None
    limit: int
    offset: int
    quota: QuotaOut | None


# ---- applications and approvals ---------------------------------------------------------------


def _conditions(items: list[Any]) -> list[dict[str, Any]]:
    return [c.model_dump() if isinstance(c, ConditionIn) else c for c in items]


def _application_out(session: SessionDep, app: Any) -> ApplicationOut:
    return ApplicationOut.model_validate(access.application_dict(session, app))


def _state(value: str) -> ApplicationState | None:
    if value in ("", "all"):
        return None
    try:
        return ApplicationState(value)
    except ValueError:
        raise Invalid("Unknown application state {state}.", state=value) from None


@router.post("/applications", response_model=ApplicationOut, status_code=status.HTTP_201_CREATED)
def apply(
    body: ApplicationIn, session: SessionDep, actor: Annotated[Actor, requires(P.data_apply)]
) -> ApplicationOut:
    app = access.apply(
        session,
        actor,
        dataset=body.dataset,
        purpose=body.purpose,
        fields=body.fields,
        until=body.until,
        row_filter=_conditions(body.row_filter),
        mode=body.mode,
    )
    return _application_out(session, app)


@router.get("/applications", response_model=ApplicationPage)
def my_applications(
    session: SessionDep,
    actor: Annotated[Actor, requires(P.data_apply)],
    page: PageDep,
    state: Annotated[str, Query(max_length=16)] = "all",
) -> ApplicationPage:
    rows, total = paginate(session, access.my_applications_stmt(actor, _state(state)), page)
    return ApplicationPage(
        items=[_application_out(session, a) for a in rows], total=total, page=page.page, size=page.size
    )


@router.post("/applications/{application_id}/withdraw", response_model=ApplicationOut)
def withdraw(
    application_id: int, session: SessionDep, actor: Annotated[Actor, requires(P.data_apply)]
) -> ApplicationOut:
    return _application_out(session, access.withdraw(session, actor, application_id))


@router.get("/approvals", response_model=ApplicationPage)
def approvals_inbox(
    session: SessionDep,
    actor: Annotated[Actor, requires(P.data_approve)],
    page: PageDep,
    state: Annotated[str, Query(max_length=16)] = "pending",
) -> ApplicationPage:
    rows, total = paginate(session, access.inbox_stmt(actor, _state(state)), page)
    return ApplicationPage(
        items=[_application_out(session, a) for a in rows], total=total, page=page.page, size=page.size
    )


@router.post("/approvals/{application_id}/approve", response_model=ApplicationOut)
def approve(
    application_id: int,
    body: ApproveIn,
    session: SessionDep,
    actor: Annotated[Actor, requires(P.data_approve)],
) -> ApplicationOut:
    access.approve(
        session,
        actor,
        application_id,
        fields=body.fields,
        extra_filter=_conditions(body.extra_filter),
        clear_fields=body.clear_fields,
        until=body.until,
        mode=body.mode,
        quota_rows_per_day=body.quota_rows_per_day,
        rate_per_minute=body.rate_per_minute,
        reason=body.reason,
    )
    return _application_out(session, access.get_application(session, application_id))


@router.post("/approvals/{application_id}/refuse", response_model=ApplicationOut)
def refuse(
    application_id: int,
    body: ReasonIn,
    session: SessionDep,
    actor: Annotated[Actor, requires(P.data_approve)],
) -> ApplicationOut:
    return _application_out(session, access.refuse(session, actor, application_id, reason=body.reason))


@router.get("/grants", response_model=list[GrantOut])
def grants(
    session: SessionDep,
    actor: Annotated[Actor, requires(P.data_read)],
    live: bool = False,
) -> list[GrantOut]:
    return [
        GrantOut.model_validate(access.grant_dict(g))
        for g in session.scalars(access.grants_stmt(actor, live_only=live))
    ]


@router.post("/grants/{grant_id}/revoke", response_model=GrantOut)
def revoke(
    grant_id: int, body: ReasonIn, session: SessionDep, actor: Annotated[Actor, requires(P.data_approve)]
) -> GrantOut:
    return GrantOut.model_validate(
        access.grant_dict(access.revoke(session, actor, grant_id, reason=body.reason))
    )


# ---- API keys -----------------------------------------------------------------------------------


@router.get("/keys", response_model=list[KeyOut])
def list_keys(session: SessionDep, actor: Annotated[Actor, requires(P.data_apply)]) -> list[KeyOut]:
    return [KeyOut.model_validate(keys.key_dict(k)) for k in keys.list_keys(session, actor)]


@router.post("/keys", response_model=KeyCreated, status_code=status.HTTP_201_CREATED)
def create_key(
    body: KeyIn, session: SessionDep, actor: Annotated[Actor, requires(P.data_apply)]
) -> KeyCreated:
    key, clear = keys.create_key(session, actor, name=body.name, days=body.days)
    return KeyCreated.model_validate({**keys.key_dict(key), "key": clear})


@router.post("/keys/{key_id}/revoke", response_model=KeyOut)
def revoke_key(key_id: int, session: SessionDep, actor: Annotated[Actor, requires(P.data_apply)]) -> KeyOut:
    return KeyOut.model_validate(keys.key_dict(keys.revoke_key(session, actor, key_id)))


# ---- usage for charts ---------------------------------------------------------------------------


@router.get("/usage")
def usage(
    session: SessionDep,
    actor: Annotated[Actor, requires(P.data_read)],
    days: Annotated[int, Query(ge=1, le=366)] = 30,
    dataset: Annotated[str, Query(max_length=100)] = "",
) -> dict[str, Any]:
    """Calls and rows per day, dataset, consumer org and channel, for ECharts: the bureau sees
    everything, an owner its datasets' use, a consumer its own keys' use."""
    return metering.usage_report(session, actor, days=days, dataset=dataset)


# ---- the data query endpoint --------------------------------------------------------------------


def api_key(request: Request, session: SessionDep) -> ApiKey:
    """The caller's live key from `X-API-Key` (or `Authorization: ApiKey …`); 401 otherwise."""
    key = keys.resolve_key(session, keys.key_from_headers(request.headers))
    request.state.api_key_prefix = key.prefix
    return key


KeyDep = Annotated[ApiKey, Depends(api_key)]


def _query_out(page: access.RowsPage) -> QueryOut:
    quota = None
    if page.quota_rows_per_day is not None and page.quota_used is not None:
        quota = QuotaOut(
            rows_per_day=page.quota_rows_per_day,
            used=page.quota_used,
            remaining=max(page.quota_rows_per_day - page.quota_used, 0),
        )
    return QueryOut(
        dataset=page.dataset,
        fields=[QueryFieldOut(name=n, type=t, masked=n in page.masked) for n, t in page.fields],
        records=page.records,
        total=page.total,
        limit=page.limit,
        offset=page.offset,
        quota=quota,
    )


def _run_query(session: SessionDep, key: ApiKey, dataset: str, body: QueryIn) -> QueryOut:
    filters: Any = body.filters if isinstance(body.filters, dict) else _conditions(body.filters)
    page = access.read_rows(
        session,
        actor=keys.key_actor(session, key),
        key=key,
        dataset=dataset,
        fields=body.fields,
        filters=filters,
        sort=body.sort,
        q=body.q,
        limit=body.limit,
        offset=body.offset,
        include_total=body.include_total,
        channel="api",
    )
    return _query_out(page)


@router.get("/query/{dataset}", response_model=QueryOut)
def query_get(
    dataset: str,
    session: SessionDep,
    key: KeyDep,
    fields: Annotated[str, Query(max_length=4000, description="comma-separated field names")] = "",
    filters: Annotated[
        str, Query(max_length=8000, description='JSON: [{"field","op","value"}] or {"field": value}')
    ] = "",
    sort: Annotated[str, Query(max_length=400, description="e.g. -age,name")] = "",
    q: Annotated[str, Query(max_length=200)] = "",
    limit: Annotated[int, Query(ge=0, le=access.MAX_LIMIT)] = access.DEFAULT_LIMIT,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
    include_total: bool = True,
) -> QueryOut:
    parsed: Any = []
    if filters.strip():
        try:
            parsed = json.loads(filters)
        except ValueError:
            raise Invalid("The filter is not valid JSON.", error_code="bad_filter") from None
        if not isinstance(parsed, list | dict):
            raise Invalid(
                "A filter is a list of conditions with field, op and value.", error_code="bad_filter"
            )
    body = QueryIn.model_construct(
        fields=[f.strip() for f in fields.split(",") if f.strip()],
        filters=parsed,
        sort=sort,
        q=q,
        limit=limit,
        offset=offset,
        include_total=include_total,
    )
    return _run_query(session, key, dataset, body)


@router.post("/query/{dataset}", response_model=QueryOut)
def query_post(dataset: str, body: QueryIn, session: SessionDep, key: KeyDep) -> QueryOut:
    return _run_query(session, key, dataset, body)
