"""Pages of the public data platform (公共数据平台): catalogue search, the dataset page with its
masked sample, my applications, the owners' approvals inbox, API keys, usage charts, the
sandbox and the lifecycle (retention, destruction requests, certificates).

Thin: reads and writes go through `service`, `search`, `access`, `keys`, `metering`, `sandbox`
and `lifecycle`, the same functions the JSON API calls, so a page shows exactly what the API
would (the sample is masked in the engine under the reader's policy, never in a template).
Forms post with htmx; a service error propagates and the app's handler renders it into the
form's error area.
"""

from __future__ import annotations

import json
import re
from datetime import date, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from civicgrid.accounts.models import Org
from civicgrid.accounts.permissions import Permission
from civicgrid.core.auth import Actor
from civicgrid.core.calendar import default_calendar
from civicgrid.core.deps import SessionDep, requires
from civicgrid.core.errors import AppError, Invalid
from civicgrid.core.i18n import gettext
from civicgrid.core.pagination import PageParams, paginate
from civicgrid.core.web import render
from civicgrid.data import access, ingest, keys, lifecycle, metering, sandbox, search, service
from civicgrid.data.engine import view_name
from civicgrid.data.models import (
    ApplicationState,
    Dataset,
    DatasetState,
    DestructionState,
    ShareClass,
    VersionState,
)

router = APIRouter(include_in_schema=False)
P = Permission
Reader = Annotated[Actor, requires(P.data_read)]
Applicant = Annotated[Actor, requires(P.data_read, P.data_apply)]
Approver = Annotated[Actor, requires(P.data_read, P.data_approve)]
Text = Annotated[str, Form()]
Texts = Annotated[list[str] | None, Form()]
PAGE_SIZE = 20


def N_(message: str) -> str:
    """Marks a msgid for extraction; translated where it is shown."""
    return message


THEMES = {
    "people": N_("People"),
    "land": N_("Land and places"),
    "matter": N_("Matters"),
    "thing": N_("Things"),
    "organisation": N_("Organisations"),
    "other": N_("Other"),
}
GRADES = {"general": N_("General"), "important": N_("Important"), "core": N_("Core")}
SHARE = {
    "unconditional": N_("Shared unconditionally"),
    "conditional": N_("Shared on conditions"),
    "none": N_("Not shared"),
}
OPEN = {"open": N_("Open to the public"), "conditional": N_("Open on conditions"), "closed": N_("Not open")}
SENSITIVITY = {"none": N_("Not personal"), "personal": N_("Personal"), "sensitive": N_("Sensitive")}
MASKS = {
    "": "",
    "id_number": N_("ID number mask"),
    "phone": N_("Phone mask"),
    "name": N_("Name mask"),
    "partial": N_("Partly hidden"),
    "hash": N_("Pseudonym (hash)"),
}
TYPES = ingest.TYPE_NAMES
VERSION_STATES = {
    "loading": N_("Loading"),
    "ready": N_("Current data"),
    "superseded": N_("Superseded"),
    "failed": N_("Failed"),
    "destroyed": N_("Destroyed"),
}
APP_STATES = {
    "pending": N_("Waiting for approval"),
    "approved": N_("Approved"),
    "refused": N_("Refused"),
    "withdrawn": N_("Withdrawn"),
}
DESTRUCTION_STATES = {
    "requested": N_("Waiting for approval"),
    "approved": N_("Approved, being carried out"),
    "refused": N_("Refused"),
    "done": N_("Destroyed"),
}
FREQUENCIES = {
    "realtime": N_("Real time"),
    "daily": N_("Daily"),
    "weekly": N_("Weekly"),
    "monthly": N_("Monthly"),
    "quarterly": N_("Quarterly"),
    "yearly": N_("Yearly"),
    "once": N_("Once"),
}
MODES = {"api": N_("Data API (masked rows)"), "sandbox": N_("Sandbox (aggregates only)")}
OPS = {
    "eq": N_("equals"),
    "ne": N_("is not"),
    "lt": N_("less than"),
    "lte": N_("at most"),
    "gt": N_("greater than"),
    "gte": N_("at least"),
    "in": N_("one of (comma-separated)"),
    "between": N_("between (low, high)"),
    "like": N_("like (% wildcard)"),
    "is_null": N_("is empty"),
    "not_null": N_("is not empty"),
}
FACET_TITLES = {
    "org": N_("Organisation"),
    "theme": N_("Theme"),
    "share_class": N_("Sharing class"),
    "open_class": N_("Opening class"),
    "tag": N_("Tag"),
}
CHANNELS = {"api": N_("Data API"), "ckan": N_("CKAN API"), "sandbox": N_("Sandbox")}
GROUP_HINTS = ("township", "village", "county", "category", "type", "industry", "status", "gender")
ORIGINS = {"user": N_("Asked by a steward"), "retention": N_("Opened by the retention check")}


def label(table: dict[str, str], value: Any) -> str:
    key = str(value.value if hasattr(value, "value") else value)
    text = table.get(key)
    return gettext(text) if text else key


def labels(table: dict[str, str]) -> list[tuple[str, str]]:
    return [(k, gettext(v)) for k, v in table.items() if v]


def when(value: Any, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """A stored time (UTC datetime or ISO text) in the jurisdiction's local time; dates as they are."""
    if value is None or value == "":
        return ""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if isinstance(value, datetime):
        value = value.astimezone(default_calendar().tz) if value.tzinfo else value
    return str(value.strftime(fmt))


def _done(request: Request, url: str) -> Response:
    """After a successful post: htmx follows HX-Redirect, a plain form a 303."""
    if request.headers.get("hx-request"):
        return Response(status_code=204, headers={"HX-Redirect": url})
    return RedirectResponse(url, status_code=303)


def _org_names(session: Session, ids: set[int]) -> dict[int, str]:
    if not ids:
        return {}
    return {i: n for i, n in session.execute(select(Org.id, Org.name).where(Org.id.in_(ids)))}


def _count(session: Session, stmt: Any) -> int:
    return int(session.scalar(select(func.count()).select_from(stmt.order_by(None).subquery())) or 0)


def tabs(session: Session, actor: Actor) -> list[dict[str, Any]]:
    """The data platform's own navigation, with the approver's waiting counts."""
    approvals = _count(session, access.inbox_stmt(actor)) if actor.can(P.data_approve) else 0
    looks_after = actor.can(P.data_manage) or actor.can(P.data_approve) or actor.can(P.data_admin)
    waiting = (
        _count(session, lifecycle.destructions_stmt(actor, DestructionState.requested)) if looks_after else 0
    )
    items = [
        ("/data", gettext("Data catalogue"), True, 0),
        ("/data/applications", gettext("My applications"), actor.can(P.data_apply), 0),
        ("/data/approvals", gettext("Access approvals"), actor.can(P.data_approve), approvals),
        ("/data/keys", gettext("API keys"), actor.can(P.data_apply), 0),
        ("/data/usage", gettext("Usage"), True, 0),
        ("/data/sandbox", gettext("Sandbox"), actor.can(P.data_apply), 0),
        ("/data/lifecycle", gettext("Lifecycle"), looks_after, waiting),
    ]
    return [{"href": h, "label": t, "count": c} for h, t, ok, c in items if ok]


def show(request: Request, session: Session, actor: Actor, template: str, **ctx: Any) -> Response:
    """A data page: the template with the data platform's tabs (the current one marked)."""
    path = request.url.path
    active = "/data/lifecycle" if path.startswith("/data/destructions") else path
    items = tabs(session, actor)
    for t in items[1:]:
        t["active"] = active.startswith(t["href"] + "/") or active == t["href"]
    items[0]["active"] = not any(t["active"] for t in items[1:])  # the catalogue and dataset pages
    return render(request, template, tabs=items, when=when, **ctx)


# ---- catalogue ------------------------------------------------------------------------------------


def _facet_items(facets: dict[str, list[dict[str, Any]]], chosen: dict[str, str]) -> list[dict[str, Any]]:
    tables = {"theme": THEMES, "share_class": SHARE, "open_class": OPEN}
    out = []
    for key, values in facets.items():
        items = []
        for v in values[:12]:
            value = str(v["value"])
            text = str(v.get("label") or (label(tables[key], value) if key in tables else value))
            items.append(
                {"value": value, "label": text, "count": v["count"], "chosen": chosen.get(key) == value}
            )
        if items:
            out.append({"key": key, "title": gettext(FACET_TITLES[key]), "items": items})
    return out


@router.get("/data")
def catalogue_page(
    request: Request,
    session: SessionDep,
    actor: Reader,
    q: str = "",
    org: str = "",
    theme: str = "",
    share_class: str = "",
    open_class: str = "",
    tag: str = "",
    page: int = 1,
) -> Response:
    """Browse and search the catalogue: one search box, facets, ranked results."""
    q = q.strip()[:200]
    chosen = {"org": org, "theme": theme, "share_class": share_class, "open_class": open_class, "tag": tag}
    chosen = {k: v.strip()[:50] for k, v in chosen.items() if v.strip()}
    page_no = max(1, min(page, 10_000))
    result = search.search(
        session, actor, q, filters=chosen, offset=(page_no - 1) * PAGE_SIZE, limit=PAGE_SIZE, sort="relevance"
    )
    names = _org_names(session, {h.doc.org_id for h in result.hits})
    rows = [
        {
            "name": h.doc.name,
            "title": h.doc.title_en if request_locale_en() and h.doc.title_en else h.doc.title,
            "description": h.doc.description,
            "org": names.get(h.doc.org_id, ""),
            "theme": label(THEMES, h.doc.theme),
            "share_class": h.doc.share_class,
            "share_label": label(SHARE, h.doc.share_class),
            "open_class": h.doc.open_class,
            "open_label": label(OPEN, h.doc.open_class),
            "tags": h.doc.tags,
            "fields": h.doc.fields,
        }
        for h in result.hits
    ]
    params = {"q": q, **chosen}
    return show(
        request,
        session,
        actor,
        "data/catalogue.html",
        q=q,
        chosen=chosen,
        rows=rows,
        total=result.total,
        terms=result.terms,
        facets=_facet_items(result.facets, chosen),
        page=page_no,
        size=PAGE_SIZE,
        base_params=params,
    )


def request_locale_en() -> bool:
    from civicgrid.core.i18n import get_locale

    return get_locale() == "en"


# ---- the dataset page -----------------------------------------------------------------------------


def _quality_rows(ds: Dataset, quality: dict[str, Any]) -> list[dict[str, Any]]:
    per_field = quality.get("fields") or {}
    out = []
    for f in ds.fields:
        q = per_field.get(f.name)
        if not isinstance(q, dict):
            continue
        out.append(
            {
                "name": f.name,
                "title": f.title,
                "filled": q.get("filled"),
                "completeness": q.get("completeness"),
                "invalid": q.get("invalid"),
                "validity": q.get("validity"),
            }
        )
    return out


def _version_row(dv: Any) -> dict[str, Any]:
    return {
        "version": dv.version,
        "mode": dv.mode,
        "state": str(dv.state),
        "state_label": label(VERSION_STATES, dv.state),
        "rows": dv.rows,
        "rejected": dv.rejected,
        "bytes": dv.bytes,
        "sha256": dv.sha256,
        "source": dv.source,
        "created_by": dv.created_by,
        "at": dv.finished_at or dv.created_at,
        "error": ingest.error_text(dv),
    }


def _sample(session: Session, actor: Actor, ds: Dataset) -> dict[str, Any]:
    """The first rows as the reader's organisation may read them — the API's policy and
    masking, in the engine — or the reason there are none."""
    if ds.state != DatasetState.active:
        return {"error": access.destroyed_error(session, ds).translated(), "code": "dataset_destroyed"}
    if service.current_version(session, ds) is None:
        return {"error": gettext("Dataset {name} has no data yet.", name=ds.name), "code": "no_data"}
    try:
        rows = access.read_rows(
            session,
            actor=actor,
            key=None,
            org_id=actor.org_id,
            dataset=ds,
            limit=access.SAMPLE_ROWS,
            include_total=True,
            channel=access.WEB_CHANNEL,
        )
    except AppError as exc:  # no grant, a sandbox-only grant, …: said on the page, nothing read
        return {"error": exc.translated(), "code": exc.code}
    titles = {f.name: f.title or f.name for f in ds.fields}
    return {
        "columns": [
            {"name": n, "title": titles.get(n, n), "masked": n in rows.masked} for n, _t in rows.fields
        ],
        "records": rows.records,
        "total": rows.total,
    }


@router.get("/data/datasets/{name}")
def dataset_page(request: Request, session: SessionDep, actor: Reader, name: str) -> Response:
    """One dataset: its catalogue entry, schema with sensitivity, the quality report of the
    latest load, its versions and a masked sample."""
    ds = service.get_visible(session, actor, name)
    org = session.get(Org, ds.owner_org_id)
    versions = service.data_versions(session, ds)
    current = service.current_version(session, ds)
    latest = next((v for v in versions if v.state != VersionState.loading), None)
    quality = service.quality(latest) if latest else {}
    manage = service.can_manage(actor, ds)
    types = ingest.field_types(ds)
    rejects = [
        {"line": r.get("line"), "reasons": [ingest.describe_reason(c, types) for c in r.get("reasons", [])]}
        for r in (quality.get("first_rejects") or [])[:20]
    ]
    fields = [
        {
            "name": f.name,
            "title": f.title,
            "type": label(TYPES, f.type),
            "description": f.description,
            "sensitivity": str(f.sensitivity),
            "sensitivity_label": label(SENSITIVITY, f.sensitivity),
            "mask": label(MASKS, f.mask),
            "primary_key": f.primary_key,
            "rules": service.rules_of(f),
        }
        for f in ds.fields
    ]
    own = ds.owner_org_id == actor.org_id
    can_apply = (
        actor.can(P.data_apply)
        and not own
        and ds.share_class != ShareClass.none
        and ds.state == DatasetState.active
    )
    return show(
        request,
        session,
        actor,
        "data/dataset.html",
        ds=ds,
        owner=org.name if org else "",
        tags=service.tags_of(ds),
        theme=label(THEMES, ds.theme),
        grade=label(GRADES, ds.grade),
        share=label(SHARE, ds.share_class),
        open_=label(OPEN, ds.open_class),
        frequency=label(FREQUENCIES, ds.update_frequency) if ds.update_frequency else "",
        destroyed=ds.state != DatasetState.active,
        fields=fields,
        versions=[_version_row(v) for v in versions],
        current=_version_row(current) if current else None,
        latest=_version_row(latest) if latest else None,
        quality=quality,
        quality_rows=_quality_rows(ds, quality),
        reasons=sorted((quality.get("reasons") or {}).items(), key=lambda kv: -int(kv[1])),
        rejects=rejects,
        sample=_sample(session, actor, ds),
        manage=manage,
        can_apply=can_apply,
        retention_until=(lifecycle.expires_at(ds, current) if current else None),
    )


# ---- applications -----------------------------------------------------------------------------------


def _application_row(session: Session, app: Any, orgs: dict[int, str]) -> dict[str, Any]:
    d = access.application_dict(session, app)
    d["state_label"] = label(APP_STATES, d["state"])
    d["mode_label"] = label(MODES, d["mode"])
    d["consumer"] = orgs.get(d["consumer_org_id"], "")
    d["owner"] = orgs.get(d["owner_org_id"] or 0, "")
    d["filter_text"] = filter_text(d["row_filter"])
    if d["grant"]:
        g = d["grant"]
        g["filter_text"] = filter_text(g["row_filter"])
        g["mode_label"] = label(MODES, g["mode"])
    return d


def filter_text(conds: list[dict[str, Any]]) -> str:
    """A row filter as a person reads it: 村代码 等于 331001001001 且 …"""
    parts = []
    for c in conds:
        value = c.get("value")
        items = value if isinstance(value, list) else ([] if value is None else [value])
        shown = "、".join(
            gettext("yes") if v is True else gettext("no") if v is False else str(v) for v in items
        )
        parts.append(f"{c.get('field')} {label(OPS, c.get('op'))} {shown}".strip())
    return gettext(" and ").join(parts)


def _applications(session: Session, stmt: Any, limit: int = 50) -> list[dict[str, Any]]:
    apps = list(session.scalars(stmt.limit(limit)))
    ids: set[int] = {a.consumer_org_id for a in apps}
    for a in apps:
        ds = session.get(Dataset, a.dataset_id)
        if ds is not None:
            ids.add(ds.owner_org_id)
    orgs = _org_names(session, ids)
    return [_application_row(session, a, orgs) for a in apps]


@router.get("/data/applications")
def applications_page(
    request: Request, session: SessionDep, actor: Applicant, created: int = 0, state: str = "all"
) -> Response:
    """My organisation's applications, with the decision, the reason and the grant."""
    chosen = ApplicationState(state) if state in ApplicationState.__members__ else None
    return show(
        request,
        session,
        actor,
        "data/applications.html",
        apps=_applications(session, access.my_applications_stmt(actor, chosen)),
        created=created,
        state=state,
        states=labels(APP_STATES),
    )


def _default_until() -> date:
    return access.today() + timedelta(days=90)


@router.get("/data/applications/new")
def new_application_page(
    request: Request, session: SessionDep, actor: Applicant, dataset: str = ""
) -> Response:
    """The apply form: purpose, fields, row filter, period and channel."""
    choices = [
        (d.name, d.title)
        for d in session.scalars(
            service.visible_stmt(actor)
            .where(
                Dataset.state == DatasetState.active,
                Dataset.share_class != ShareClass.none,
                Dataset.owner_org_id != actor.org_id,
            )
            .order_by(Dataset.name)
            .limit(500)
        )
    ]
    ds = service.get_visible(session, actor, dataset) if dataset else None
    fields = (
        [
            {
                "name": f.name,
                "title": f.title or f.name,
                "protected": access.is_protected(f),
                "sensitivity_label": label(SENSITIVITY, f.sensitivity),
                "mask": label(MASKS, f.mask),
            }
            for f in ds.fields
        ]
        if ds
        else []
    )
    return show(
        request,
        session,
        actor,
        "data/apply.html",
        ds=ds,
        choices=choices,
        fields=fields,
        ops=labels(OPS),
        modes=labels(MODES),
        until=_default_until().isoformat(),
        max_until=(access.today() + timedelta(days=access.MAX_PERIOD_DAYS)).isoformat(),
        share=label(SHARE, ds.share_class) if ds else "",
    )


_SPLIT = re.compile(r"\s*[,，、;；]\s*")


def conditions_from_form(fields: list[str], ops: list[str], values: list[str]) -> list[dict[str, Any]]:
    """Filter rows of a form (field, op, value; empty rows skipped) as structured conditions;
    `in` and `between` take comma-separated values. The service checks them against the schema."""
    out: list[dict[str, Any]] = []
    for i, name in enumerate(fields):
        name = name.strip()
        if not name:
            continue
        op = ops[i] if i < len(ops) and ops[i] else "eq"
        raw = values[i].strip() if i < len(values) else ""
        value: Any
        if op in ("is_null", "not_null"):
            value = None
        elif op in ("in", "between"):
            value = [v for v in _SPLIT.split(raw) if v]
        else:
            value = raw if raw else None
        out.append({"field": name, "op": op, "value": value})
    return out


def _date(value: str, what: str) -> date:
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise Invalid("{field} is not a date (YYYY-MM-DD).", field=what) from None


@router.post("/data/applications")
def create_application(
    request: Request,
    session: SessionDep,
    actor: Applicant,
    dataset: Text,
    purpose: Text = "",
    until: Text = "",
    mode: Text = "api",
    fields: Texts = None,
    filter_field: Texts = None,
    filter_op: Texts = None,
    filter_value: Texts = None,
) -> Response:
    app = access.apply(
        session,
        actor,
        dataset=dataset.strip(),
        purpose=purpose,
        fields=fields or [],
        until=_date(until, gettext("Period")),
        row_filter=conditions_from_form(filter_field or [], filter_op or [], filter_value or []),
        mode=mode,
    )
    return _done(request, f"/data/applications?created={app.id}")


@router.post("/data/applications/{application_id}/withdraw")
def withdraw_application(
    request: Request, session: SessionDep, actor: Applicant, application_id: int
) -> Response:
    access.withdraw(session, actor, application_id)
    return _done(request, "/data/applications")


# ---- the approvals inbox ------------------------------------------------------------------------------


def _inbox_row(session: Session, row: dict[str, Any]) -> dict[str, Any]:
    ds = service.get_dataset(session, row["dataset"]) if row["dataset"] else None
    by_name = {f.name: f for f in ds.fields} if ds else {}
    row["field_rows"] = [
        {
            "name": n,
            "title": by_name[n].title if n in by_name else n,
            "protected": n in by_name and access.is_protected(by_name[n]),
            "sensitivity_label": label(SENSITIVITY, by_name[n].sensitivity) if n in by_name else "",
        }
        for n in row["fields"]
    ]
    row["all_fields"] = [(f.name, f.title or f.name) for f in ds.fields] if ds else []
    return row


@router.get("/data/approvals")
def approvals_page(request: Request, session: SessionDep, actor: Approver) -> Response:
    """Applications for the organisation's datasets: approve (possibly narrowing) or refuse."""
    pending = [_inbox_row(session, r) for r in _applications(session, access.inbox_stmt(actor), 100)]
    decided = _applications(
        session, access.inbox_stmt(actor, None).order_by(None).order_by(_app_id_desc()), 30
    )
    decided = [r for r in decided if r["state"] != "pending"][:20]
    grants = []
    for g in session.scalars(access.grants_stmt(actor, live_only=True).limit(100)):
        ds = session.get(Dataset, g.dataset_id)
        if ds is None or ds.owner_org_id != actor.org_id:
            continue
        d = access.grant_dict(g)
        d["dataset"] = ds.name
        d["consumer"] = _org_names(session, {g.consumer_org_id}).get(g.consumer_org_id, "")
        d["mode_label"] = label(MODES, g.mode)
        grants.append(d)
    return show(
        request,
        session,
        actor,
        "data/approvals.html",
        pending=pending,
        decided=decided,
        grants=grants,
        ops=labels(OPS),
        modes=labels(MODES),
    )


def _app_id_desc() -> Any:
    from civicgrid.data.models import Application

    return Application.id.desc()


def _int_or_none(value: str, what: str) -> int | None:
    value = value.strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise Invalid("{field} must be a whole number.", field=what) from None


@router.post("/data/approvals/{application_id}/approve")
def approve_application(
    request: Request,
    session: SessionDep,
    actor: Approver,
    application_id: int,
    fields: Texts = None,
    clear_fields: Texts = None,
    until: Text = "",
    mode: Text = "",
    quota_rows_per_day: Text = "",
    rate_per_minute: Text = "",
    reason: Text = "",
    filter_field: Texts = None,
    filter_op: Texts = None,
    filter_value: Texts = None,
) -> Response:
    if not fields:
        raise Invalid("Name at least one field.", error_code="no_fields")
    access.approve(
        session,
        actor,
        application_id,
        fields=fields,
        extra_filter=conditions_from_form(filter_field or [], filter_op or [], filter_value or []),
        clear_fields=clear_fields or [],
        until=_date(until, gettext("Period")) if until.strip() else None,
        mode=mode or None,
        quota_rows_per_day=_int_or_none(quota_rows_per_day, gettext("Daily row quota")),
        rate_per_minute=_int_or_none(rate_per_minute, gettext("Calls per minute")),
        reason=reason,
    )
    return _done(request, "/data/approvals")


@router.post("/data/approvals/{application_id}/refuse")
def refuse_application(
    request: Request, session: SessionDep, actor: Approver, application_id: int, reason: Text = ""
) -> Response:
    access.refuse(session, actor, application_id, reason=reason)
    return _done(request, "/data/approvals")


@router.post("/data/grants/{grant_id}/revoke")
def revoke_grant(
    request: Request, session: SessionDep, actor: Approver, grant_id: int, reason: Text = ""
) -> Response:
    access.revoke(session, actor, grant_id, reason=reason)
    return _done(request, "/data/approvals")


# ---- API keys and usage --------------------------------------------------------------------------------


@router.get("/data/keys")
def keys_page(request: Request, session: SessionDep, actor: Applicant) -> Response:
    """The organisation's API keys (the clear key is shown once, when created)."""
    return show(
        request,
        session,
        actor,
        "data/keys.html",
        keys=[keys.key_dict(k) for k in keys.list_keys(session, actor)],
        new_key="",
        grants=_live_grants_of_org(session, actor),
    )


def _live_grants_of_org(session: Session, actor: Actor) -> list[dict[str, Any]]:
    out = []
    for g in session.scalars(access.grants_stmt(actor, live_only=True).limit(100)):
        if g.consumer_org_id != actor.org_id:
            continue
        ds = session.get(Dataset, g.dataset_id)
        d = access.grant_dict(g)
        d["dataset"] = ds.name if ds else ""
        d["title"] = ds.title if ds else ""
        d["mode_label"] = label(MODES, g.mode)
        out.append(d)
    return out


@router.post("/data/keys")
def create_key(
    request: Request, session: SessionDep, actor: Applicant, name: Text = "", days: Text = "365"
) -> Response:
    key, clear = keys.create_key(
        session, actor, name=name, days=_int_or_none(days, gettext("Valid for (days)")) or 365
    )
    ctx: dict[str, Any] = {
        "keys": [keys.key_dict(k) for k in keys.list_keys(session, actor)],
        "new_key": clear,
        "key_name": key.name,
    }
    if request.headers.get("hx-request"):
        return render(request, "data/_key_created.html", when=when, **ctx)
    return show(request, session, actor, "data/keys.html", grants=_live_grants_of_org(session, actor), **ctx)


@router.post("/data/keys/{key_id}/revoke")
def revoke_key(request: Request, session: SessionDep, actor: Applicant, key_id: int) -> Response:
    keys.revoke_key(session, actor, key_id)
    if request.headers.get("hx-request"):
        return render(
            request, "data/_keys.html", keys=[keys.key_dict(k) for k in keys.list_keys(session, actor)]
        )
    return _done(request, "/data/keys")


@router.get("/data/usage")
def usage_page(
    request: Request, session: SessionDep, actor: Reader, days: int = 30, dataset: str = ""
) -> Response:
    """Calls and rows per day, dataset, consumer and channel (ECharts over the metering tables)."""
    days = max(1, min(days, 366))
    report = metering.usage_report(session, actor, days=days, dataset=dataset.strip()[:100])
    channels = [
        {"channel": ch, "label": label(CHANNELS, ch), "calls": v["calls"], "rows": v["rows"]}
        for ch, v in (report.get("channels") or {}).items()
    ]
    chart = {
        "days": report.get("days", []),
        "series": [
            {"name": s["title"] or s["name"], "calls": s["calls"], "rows": s["rows"]}
            for s in report.get("datasets", [])
        ],
        "consumers": [
            {"name": c["org"] or gettext("Without a key"), "calls": c["calls"], "rows": c["rows"]}
            for c in report.get("consumers", [])
        ],
        "labels": {"calls": gettext("Calls"), "rows": gettext("Rows")},
    }
    return show(
        request,
        session,
        actor,
        "data/usage.html",
        report=report,
        channels=channels,
        chart=chart,
        days=days,
        dataset=dataset,
    )


# ---- the sandbox ---------------------------------------------------------------------------------------


def _sandbox_datasets(session: Session, actor: Actor) -> list[dict[str, Any]]:
    """The datasets the organisation may query in the sandbox, with their SQL names and fields."""
    out = []
    stmt = service.visible_stmt(actor).where(Dataset.state == DatasetState.active).order_by(Dataset.name)
    for ds in session.scalars(stmt.limit(300)):
        if ds.current_version_id is None:
            continue
        try:
            policy = access.policy_for(session, actor.org_id, ds)
        except AppError:
            continue
        titles = {f.name: f.title or f.name for f in ds.fields}
        keys_ = {f.name for f in ds.fields if f.primary_key}
        out.append(
            {
                "name": ds.name,
                "title": ds.title,
                "view": view_name(ds.name),
                "k": ds.k_threshold,
                "mode": label(MODES, policy.mode) if not policy.owner else gettext("Own data"),
                "fields": [
                    {"name": n, "title": titles.get(n, n), "masked": policy.masked(n), "key": n in keys_}
                    for n in policy.fields
                ],
            }
        )
    return out


def _history(session: Session, actor: Actor) -> list[Any]:
    rows, _total = paginate(session, sandbox.history_stmt(actor), PageParams(page=1, size=10))
    return list(rows)


@router.get("/data/sandbox")
def sandbox_page(request: Request, session: SessionDep, actor: Applicant) -> Response:
    """One aggregate SQL query over the datasets the organisation may use; raw rows never leave."""
    usable = _sandbox_datasets(session, actor)
    example = ""
    if usable:
        first = usable[0]
        plain = [f["name"] for f in first["fields"] if not f["masked"] and not f["key"]]
        # a column with few values groups well: a place or a category before anything else
        group = next((n for n in GROUP_HINTS if n in plain), plain[0] if plain else "")
        example = (
            f"SELECT {group}, count(*) AS n FROM {first['view']} GROUP BY {group} ORDER BY n DESC"
            if group
            else f"SELECT count(*) AS n FROM {first['view']}"
        )
    return show(
        request,
        session,
        actor,
        "data/sandbox.html",
        usable=usable,
        example=example,
        functions=sandbox.allowed_functions(),
        history=_history(session, actor),
    )


@router.post("/data/sandbox")
def run_sandbox(request: Request, session: SessionDep, actor: Applicant, sql: Text = "") -> Response:
    """Run the query through the sandbox service; the result (or the refusal) as a fragment."""
    if not sql.strip():
        raise Invalid("Write one SELECT query.")
    if len(sql) > 20_000:
        raise Invalid("The query is longer than {max} characters.", max=20_000)
    try:
        result = sandbox.run_query(session, actor, sql)
    except AppError:
        session.commit()  # the refusal stays in the history and the audit log
        raise
    return render(request, "data/_sandbox_result.html", when=when, result=result)


# ---- lifecycle -----------------------------------------------------------------------------------------


def _looks_after(actor: Actor) -> None:
    if not (actor.can(P.data_manage) or actor.can(P.data_approve) or actor.can(P.data_admin)):
        from civicgrid.core.errors import PermissionDenied

        raise PermissionDenied("Your role does not allow this.")


def _destruction_row(session: Session, actor: Actor, d: Any) -> dict[str, Any]:
    row = lifecycle.destruction_dict(session, d)
    ds = session.get(Dataset, d.dataset_id)
    row["state_label"] = label(DESTRUCTION_STATES, row["state"])
    row["origin_label"] = label(ORIGINS, row["origin"])
    row["can_decide"] = (
        ds is not None and d.state == DestructionState.requested and lifecycle.can_decide(actor, ds, d)
    )
    row["own"] = d.requested_by == actor.username
    return row


@router.get("/data/lifecycle")
def lifecycle_page(request: Request, session: SessionDep, actor: Reader) -> Response:
    """Retention per dataset, what is past it, destruction requests and certificates."""
    _looks_after(actor)
    managed = []
    for ds in session.scalars(lifecycle.managed_stmt(actor).limit(500)):
        current = service.current_version(session, ds)
        managed.append(
            {
                "name": ds.name,
                "title": ds.title,
                "state": str(ds.state),
                "retention_days": ds.retention_days,
                "current": current.version if current else None,
                "loaded_at": (current.finished_at or current.created_at) if current else None,
                "expires_at": lifecycle.expires_at(ds, current) if current else None,
                "can_manage": service.can_manage(actor, ds),
                "versions": [
                    v.version
                    for v in service.data_versions(session, ds)
                    if v.state in lifecycle.HOLDING and (current is None or v.id != current.id)
                ],
            }
        )
    due = [
        {
            "dataset": i.dataset.name,
            "title": i.dataset.title,
            "scope": i.scope,
            "versions": i.numbers,
            "since": i.since,
            "retention_days": i.dataset.retention_days,
            "open": (o.id if (o := lifecycle.open_request(session, i.dataset.id)) else None),
        }
        for i in lifecycle.expired(session, actor)
    ]
    rows = [
        _destruction_row(session, actor, d)
        for d in session.scalars(lifecycle.destructions_stmt(actor).limit(100))
    ]
    return show(
        request,
        session,
        actor,
        "data/lifecycle.html",
        managed=managed,
        due=due,
        open_rows=[r for r in rows if r["state"] in ("requested", "approved")],
        done_rows=[r for r in rows if r["state"] == "done"],
        refused_rows=[r for r in rows if r["state"] == "refused"][:20],
        can_request=actor.can(P.data_manage) or actor.can(P.data_admin),
    )


@router.post("/data/lifecycle/retention")
def set_retention(
    request: Request, session: SessionDep, actor: Reader, dataset: Text, retention_days: Text = ""
) -> Response:
    """Set (or clear: keep without limit) a dataset's retention period in days."""
    days = _int_or_none(retention_days, gettext("Retention (days)"))
    service.update_dataset(session, actor, dataset.strip(), retention_days=days)
    return _done(request, "/data/lifecycle")


def _numbers(text: str) -> list[int]:
    out = []
    for part in _SPLIT.split(text.strip()):
        if not part:
            continue
        if not part.lstrip("v").isdigit():
            raise Invalid("Versions are numbers separated by commas, e.g. 1, 2.")
        out.append(int(part.lstrip("v")))
    return out


@router.post("/data/destructions")
def request_destruction(
    request: Request,
    session: SessionDep,
    actor: Reader,
    dataset: Text,
    reason: Text = "",
    versions: Text = "",
) -> Response:
    d = lifecycle.request_destruction(
        session, actor, dataset.strip(), reason=reason, versions=_numbers(versions) or None
    )
    return _done(request, f"/data/destructions/{d.id}")


@router.post("/data/destructions/{destruction_id}/approve")
def approve_destruction(
    request: Request, session: SessionDep, actor: Reader, destruction_id: int, reason: Text = ""
) -> Response:
    lifecycle.approve_destruction(session, actor, destruction_id, reason=reason)
    return _done(request, f"/data/destructions/{destruction_id}")


@router.post("/data/destructions/{destruction_id}/refuse")
def refuse_destruction(
    request: Request, session: SessionDep, actor: Reader, destruction_id: int, reason: Text = ""
) -> Response:
    lifecycle.refuse_destruction(session, actor, destruction_id, reason=reason)
    return _done(request, f"/data/destructions/{destruction_id}")


@router.get("/data/destructions/{destruction_id}")
def destruction_page(request: Request, session: SessionDep, actor: Reader, destruction_id: int) -> Response:
    """A destruction request, and once carried out its certificate (销毁证明)."""
    d, _ds = lifecycle.get_destruction(session, actor, destruction_id)
    row = _destruction_row(session, actor, d)
    cert = lifecycle.certificate(d) if d.state == DestructionState.done else None
    return show(
        request,
        session,
        actor,
        "data/destruction.html",
        d=row,
        cert=cert,
        cert_json=json.dumps(cert, ensure_ascii=False, indent=2, sort_keys=True) if cert else "",
    )
