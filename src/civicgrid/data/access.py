"""Application and approval (统一申请): a consumer org applies, the owner decides, an approval
compiles into ONE `Grant` — the policy the data API, the sandbox and the audit all enforce.

`policy_for(session, org_id, dataset)` is that policy (or a 403 saying why there is none);
`record_read(...)` writes every read into the hash-chained audit log and the meter.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from civicgrid.core import audit
from civicgrid.core.auth import Actor
from civicgrid.core.calendar import default_calendar
from civicgrid.core.db import utcnow
from civicgrid.core.errors import AppError, Conflict, Invalid, NotFound, PermissionDenied, TooManyRequests
from civicgrid.core.masking import mask_value
from civicgrid.data import metering
from civicgrid.data.models import (
    ApiKey,
    Application,
    ApplicationState,
    Dataset,
    DatasetField,
    DatasetState,
    FieldType,
    Grant,
    OpenClass,
    Sensitivity,
    ShareClass,
)

MODES = ("api", "sandbox")
MAX_PERIOD_DAYS = 366
MAX_QUOTA_ROWS = 10_000_000
MAX_RATE_PER_MINUTE = 6_000
MAX_FILTER_CONDITIONS = 20
MAX_IN_VALUES = 1_000
DEFAULT_MASK = "partial"  # a personal field with no mask rule of its own
# The owner org reads its own data through the same interface, in clear, without a grant.
OWNER_QUOTA_ROWS = MAX_QUOTA_ROWS
OWNER_RATE_PER_MINUTE = MAX_RATE_PER_MINUTE
# Open data (无条件开放) needs no grant; a key reading it still has a quota and a rate.
OPEN_QUOTA_ROWS = 100_000
OPEN_RATE_PER_MINUTE = 600

OPS = ("eq", "ne", "lt", "lte", "gt", "gte", "in", "between", "like", "is_null", "not_null")
_OP_ALIASES = {
    "=": "eq",
    "==": "eq",
    "!=": "ne",
    "<>": "ne",
    "<": "lt",
    "<=": "lte",
    ">": "gt",
    ">=": "gte",
    "is null": "is_null",
    "is not null": "not_null",
}
_ORDERED_OPS = {"lt", "lte", "gt", "gte", "between"}
_NO_VALUE_OPS = {"is_null", "not_null"}


# ---- row filters ------------------------------------------------------------------------


@dataclass(frozen=True)
class Condition:
    """One structured row condition `field op value`; a filter is the AND of its conditions."""

    field: str
    op: str
    value: Any = None

    def as_dict(self) -> dict[str, Any]:
        return {"field": self.field, "op": self.op, "value": self.value}


def _typed(ftype: FieldType, value: Any, name: str) -> Any:
    """The value converted to the field's type, or a 422 naming the field."""
    try:
        if ftype == FieldType.integer:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if ftype == FieldType.float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if ftype == FieldType.boolean:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("true", "1"):
                return True
            if str(value).lower() in ("false", "0"):
                return False
            raise ValueError
        if ftype == FieldType.date:
            return date.fromisoformat(str(value)).isoformat()
        if ftype == FieldType.datetime:
            return datetime.fromisoformat(str(value)).isoformat()
        if isinstance(value, dict | list):
            raise ValueError
        return str(value)
    except (TypeError, ValueError):
        raise Invalid(
            "The value {value} does not fit field {field} (type {type}).",
            error_code="bad_filter_value",
            value=json.dumps(value, ensure_ascii=False, default=str)[:60],
            field=name,
            type=str(ftype),
        ) from None


def parse_conditions(dataset: Dataset, raw: Any) -> list[Condition]:
    """Structured conditions validated against the schema: known fields, known operators,
    values of the field's type. `raw` is a list of {"field","op","value"} or a {field: value}
    map (CKAN's `filters`, equality; a list value means "in")."""
    if raw is None or raw == "" or raw == [] or raw == {}:
        return []
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raise Invalid("The filter is not valid JSON.", error_code="bad_filter") from None
    if isinstance(raw, dict):
        raw = [{"field": k, "op": "in" if isinstance(v, list) else "eq", "value": v} for k, v in raw.items()]
    if not isinstance(raw, list):
        raise Invalid("A filter is a list of conditions with field, op and value.", error_code="bad_filter")
    if len(raw) > MAX_FILTER_CONDITIONS:
        raise Invalid("A filter has at most {max} conditions.", max=MAX_FILTER_CONDITIONS)
    by_name = {f.name: f for f in dataset.fields}
    out: list[Condition] = []
    for item in raw:
        if isinstance(item, Condition):
            item = item.as_dict()
        if not isinstance(item, dict) or "field" not in item:
            raise Invalid(
                "A filter is a list of conditions with field, op and value.", error_code="bad_filter"
            )
        name = str(item["field"])
        op = str(item.get("op", "eq")).strip().lower()
        op = _OP_ALIASES.get(op, op)
        f = by_name.get(name)
        if f is None:
            raise Invalid(
                "Dataset {dataset} has no field {field}.",
                error_code="unknown_field",
                dataset=dataset.name,
                field=name,
            )
        if op not in OPS:
            raise Invalid(
                "Unknown filter operator {op}; use one of {ops}.",
                error_code="bad_filter",
                op=op,
                ops=", ".join(OPS),
            )
        if op in _ORDERED_OPS and f.type == FieldType.boolean:
            raise Invalid(
                "Field {field} is a yes/no field and cannot be compared with {op}.", field=name, op=op
            )
        value: Any = None
        if op in _NO_VALUE_OPS:
            value = None
        elif op == "in":
            vals = item.get("value")
            if not isinstance(vals, list) or not vals or len(vals) > MAX_IN_VALUES:
                raise Invalid(
                    "The in operator takes a list of 1 to {max} values.",
                    error_code="bad_filter",
                    max=MAX_IN_VALUES,
                )
            value = [_typed(f.type, v, name) for v in vals]
        elif op == "between":
            vals = item.get("value")
            if not isinstance(vals, list) or len(vals) != 2 or None in vals:
                raise Invalid("between takes a list of two values, low and high.", error_code="bad_filter")
            value = [_typed(f.type, v, name) for v in vals]
        elif op == "like":
            if f.type != FieldType.string or not isinstance(item.get("value"), str):
                raise Invalid("like compares a text field with a text pattern.", error_code="bad_filter")
            value = item["value"]
        else:
            if item.get("value") is None:
                raise Invalid(
                    "The condition on field {field} needs a value.", error_code="bad_filter", field=name
                )
            value = _typed(f.type, item["value"], name)
        out.append(Condition(name, op, value))
    return out


def _load_conditions(text: str) -> list[Condition]:
    return [Condition(c["field"], c["op"], c.get("value")) for c in json.loads(text or "[]")]


def _dump_conditions(conds: Sequence[Condition]) -> str:
    return json.dumps([c.as_dict() for c in conds], ensure_ascii=False)


# ---- the policy ---------------------------------------------------------------------------


def is_protected(f: DatasetField) -> bool:
    """Personal and sensitive fields, and any field with a mask rule, are masked unless granted in clear."""
    return f.sensitivity != Sensitivity.none or bool(f.mask)


def mask_kind(f: DatasetField) -> str:
    return f.mask or DEFAULT_MASK


@dataclass(frozen=True)
class Policy:
    """What one org may read from one dataset: the compiled grant (or the owner's own rights)."""

    grant_id: int  # 0: the owner org reading its own data
    dataset_id: int
    dataset: str
    org_id: int
    fields: tuple[str, ...]
    clear_fields: frozenset[str]
    masks: dict[str, str]  # readable field → mask rule, for fields read masked
    row_filter: tuple[Condition, ...]
    mode: str
    quota_rows_per_day: int
    rate_per_minute: int
    expires_at: datetime | None
    k_threshold: int = 10
    owner: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def allows_rows(self) -> bool:
        """Raw (masked) rows through the API; a sandbox-only grant yields aggregates only."""
        return self.mode == "api" or self.owner

    def masked(self, name: str) -> bool:
        return name in self.masks

    def engine_filters(self) -> list[Any]:
        """The row filter as the engine's `Filter`s (AND-ed under every read)."""
        from civicgrid.data import engine

        return [engine.Filter(c.field, _ENGINE_OPS[c.op], c.value) for c in self.row_filter]

    def as_dict(self) -> dict[str, Any]:
        return {
            "grant_id": self.grant_id,
            "dataset": self.dataset,
            "org_id": self.org_id,
            "fields": list(self.fields),
            "clear_fields": sorted(self.clear_fields),
            "masks": dict(self.masks),
            "row_filter": [c.as_dict() for c in self.row_filter],
            "mode": self.mode,
            "quota_rows_per_day": self.quota_rows_per_day,
            "rate_per_minute": self.rate_per_minute,
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "owner": self.owner,
        }


def N_(message: str) -> str:
    """Marks a msgid for extraction; it is translated where it is shown."""
    return message


class DatasetDestroyed(AppError):
    """410: the dataset's data was destroyed under an approved destruction request. Not a
    NotFound, so no channel mistakes it for a name it does not know."""

    status = 410
    code = "dataset_destroyed"


DESTROYED_MESSAGE = N_(
    "The data of dataset {name} was destroyed on {day} (destruction certificate {number}); "
    "it can no longer be read."
)


def destroyed_error(session: Session, ds: Dataset) -> DatasetDestroyed:
    """The error every reading channel gives for a destroyed dataset, naming its certificate."""
    from civicgrid.data import lifecycle

    done = lifecycle.last_done(session, ds.id)
    day = _local(done.done_at).date().isoformat() if done and done.done_at else "-"
    number = lifecycle.certificate_number(done) if done else "-"
    return DatasetDestroyed(DESTROYED_MESSAGE, name=ds.name, day=day, number=number)


def get_dataset(session: Session, dataset: Dataset | str | int) -> Dataset:
    """A live dataset by object, name or id; 404 when there is none, 410 when it was destroyed."""
    if isinstance(dataset, Dataset):
        ds: Dataset | None = dataset
    elif isinstance(dataset, int):
        ds = session.get(Dataset, dataset)
    else:
        ds = session.scalar(select(Dataset).where(Dataset.name == dataset))
    if ds is None:
        raise NotFound(
            "No dataset named {name}.",
            error_code="unknown_dataset",
            name=str(dataset if not isinstance(dataset, Dataset) else dataset.name),
        )
    if ds.state != DatasetState.active:
        raise destroyed_error(session, ds)
    return ds


def compile_policy(ds: Dataset, grant: Grant) -> Policy:
    fields = tuple(json.loads(grant.fields))
    clear = frozenset(json.loads(grant.clear_fields or "[]"))
    by_name = {f.name: f for f in ds.fields}
    masks = {
        n: mask_kind(by_name[n])
        for n in fields
        if n in by_name and is_protected(by_name[n]) and n not in clear
    }
    return Policy(
        grant_id=grant.id,
        dataset_id=ds.id,
        dataset=ds.name,
        org_id=grant.consumer_org_id,
        fields=tuple(n for n in fields if n in by_name),
        clear_fields=clear,
        masks=masks,
        row_filter=tuple(_load_conditions(grant.row_filter)),
        mode=grant.mode,
        quota_rows_per_day=grant.quota_rows_per_day,
        rate_per_minute=grant.rate_per_minute,
        expires_at=grant.expires_at,
        k_threshold=ds.k_threshold,
    )


def owner_policy(ds: Dataset) -> Policy:
    names = tuple(f.name for f in ds.fields)
    return Policy(
        grant_id=0,
        dataset_id=ds.id,
        dataset=ds.name,
        org_id=ds.owner_org_id,
        fields=names,
        clear_fields=frozenset(names),
        masks={},
        row_filter=(),
        mode="api",
        quota_rows_per_day=OWNER_QUOTA_ROWS,
        rate_per_minute=OWNER_RATE_PER_MINUTE,
        expires_at=None,
        k_threshold=ds.k_threshold,
        owner=True,
    )


def open_policy(ds: Dataset) -> Policy:
    """无条件开放 data: every field to anyone, personal fields masked; no grant needed."""
    names = tuple(f.name for f in ds.fields)
    return Policy(
        grant_id=0,
        dataset_id=ds.id,
        dataset=ds.name,
        org_id=0,
        fields=names,
        clear_fields=frozenset(),
        masks={f.name: mask_kind(f) for f in ds.fields if is_protected(f)},
        row_filter=(),
        mode="api",
        quota_rows_per_day=OPEN_QUOTA_ROWS,
        rate_per_minute=OPEN_RATE_PER_MINUTE,
        expires_at=None,
        k_threshold=ds.k_threshold,
    )


def live_grant(session: Session, org_id: int, dataset_id: int, now: datetime | None = None) -> Grant | None:
    now = now or utcnow()
    return session.scalar(
        select(Grant)
        .where(
            Grant.consumer_org_id == org_id,
            Grant.dataset_id == dataset_id,
            Grant.revoked_at.is_(None),
            Grant.expires_at > now,
        )
        .order_by(Grant.id.desc())
        .limit(1)
    )


def policy_for(session: Session, org_id: int, dataset: Dataset | str | int) -> Policy:
    """The policy under which `org_id` reads `dataset`: the owner's own rights, or its one live
    grant. 404 for an unknown dataset; 403 with the reason (never applied, expired, revoked)."""
    ds = get_dataset(session, dataset)
    if org_id == ds.owner_org_id:
        return owner_policy(ds)
    now = utcnow()
    grant = live_grant(session, org_id, ds.id, now)
    if grant is not None:
        return compile_policy(ds, grant)
    if ds.open_class == OpenClass.open:
        return open_policy(ds)
    last = session.scalar(
        select(Grant)
        .where(Grant.consumer_org_id == org_id, Grant.dataset_id == ds.id)
        .order_by(Grant.id.desc())
        .limit(1)
    )
    if last is not None and last.revoked_at is not None:
        raise PermissionDenied(
            "Your organisation's grant for dataset {name} was revoked; apply again to read it.",
            error_code="grant_revoked",
            name=ds.name,
        )
    if last is not None:
        raise PermissionDenied(
            "Your organisation's grant for dataset {name} expired on {day}; apply again to read it.",
            error_code="grant_expired",
            name=ds.name,
            day=_local(last.expires_at - timedelta(seconds=1)).date().isoformat(),
        )
    raise PermissionDenied(
        "Your organisation holds no grant for dataset {name}; apply for access first.",
        error_code="no_grant",
        name=ds.name,
    )


# ---- applications -----------------------------------------------------------------------


def _local(at: datetime) -> datetime:
    return at.astimezone(default_calendar().tz)


def today() -> date:
    return _local(utcnow()).date()


def end_of_day(d: date) -> datetime:
    """The grant period ends at local midnight after its last day."""
    tz = default_calendar().tz
    return datetime.combine(d + timedelta(days=1), time(0, 0), tz)


def _check_period(until: date, *, not_after: date | None = None) -> None:
    if until < today():
        raise Invalid("The period must end today or later.", error_code="bad_period")
    if until > today() + timedelta(days=MAX_PERIOD_DAYS):
        raise Invalid("A grant lasts at most {days} days; apply again to extend it.", days=MAX_PERIOD_DAYS)
    if not_after and until > not_after:
        raise Invalid(
            "An approval may shorten the requested period, not lengthen it (requested until {day}).",
            error_code="widening",
            day=not_after.isoformat(),
        )


def _check_fields(ds: Dataset, names: Sequence[str]) -> list[str]:
    known = {f.name for f in ds.fields}
    if not names:
        raise Invalid("Name at least one field.", error_code="no_fields")
    unknown = [n for n in names if n not in known]
    if unknown:
        raise Invalid(
            "Dataset {dataset} has no field {field}.",
            error_code="unknown_field",
            dataset=ds.name,
            field=", ".join(unknown),
        )
    seen: list[str] = []
    for n in names:
        if n not in seen:
            seen.append(n)
    return seen


def application_dict(session: Session, app: Application) -> dict[str, Any]:
    ds = session.get(Dataset, app.dataset_id)
    grant = session.scalar(select(Grant).where(Grant.application_id == app.id))
    return {
        "id": app.id,
        "dataset": ds.name if ds else "",
        "dataset_title": ds.title if ds else "",
        "owner_org_id": ds.owner_org_id if ds else None,
        "consumer_org_id": app.consumer_org_id,
        "applicant": app.applicant,
        "purpose": app.purpose,
        "fields": json.loads(app.fields),
        "row_filter": json.loads(app.row_filter or "[]"),
        "mode": app.mode,
        "until": app.until,
        "state": str(app.state),
        "decided_by": app.decided_by,
        "decision_reason": app.decision_reason,
        "created_at": app.created_at,
        "grant": grant_dict(grant) if grant else None,
    }


def grant_dict(g: Grant) -> dict[str, Any]:
    now = utcnow()
    return {
        "id": g.id,
        "application_id": g.application_id,
        "dataset_id": g.dataset_id,
        "consumer_org_id": g.consumer_org_id,
        "fields": json.loads(g.fields),
        "clear_fields": json.loads(g.clear_fields or "[]"),
        "row_filter": json.loads(g.row_filter or "[]"),
        "mode": g.mode,
        "quota_rows_per_day": g.quota_rows_per_day,
        "rate_per_minute": g.rate_per_minute,
        "expires_at": g.expires_at,
        "revoked_at": g.revoked_at,
        "live": g.revoked_at is None and g.expires_at > now,
    }


def apply(
    session: Session,
    actor: Actor,
    *,
    dataset: str,
    purpose: str,
    fields: Sequence[str],
    until: date,
    row_filter: Any = None,
    mode: str = "api",
) -> Application:
    """A consumer org asks for a dataset it may see in the catalogue. An application for an
    unconditionally shared (无条件共享) dataset that names no personal or sensitive field is
    approved at once as asked (decided_by "system"); every other one waits for the owner, who
    alone can let personal data out, masked or in clear."""
    from civicgrid.data import service

    ds = get_dataset(session, service.get_visible(session, actor, dataset))
    if ds.owner_org_id == actor.org_id:
        raise Conflict("Your organisation owns dataset {name}; it needs no application.", name=ds.name)
    if ds.share_class == ShareClass.none:
        raise PermissionDenied(
            "Dataset {name} is not shared: {basis}",
            error_code="not_shared",
            name=ds.name,
            basis=ds.share_condition or "-",
        )
    purpose = purpose.strip()
    if len(purpose) < 4:
        raise Invalid("Say what the data is for (at least a few words).", error_code="no_purpose")
    if mode not in MODES:
        raise Invalid("Access is through the api or the sandbox.", error_code="bad_mode")
    names = _check_fields(ds, list(fields))
    conds = parse_conditions(ds, row_filter)
    _check_period(until)
    pending = session.scalar(
        select(Application.id).where(
            Application.dataset_id == ds.id,
            Application.consumer_org_id == actor.org_id,
            Application.state == ApplicationState.pending,
        )
    )
    if pending:
        raise Conflict(
            "Your organisation already has a pending application ({id}) for this dataset.", id=pending
        )
    app = Application(
        dataset_id=ds.id,
        consumer_org_id=actor.org_id,
        applicant=actor.username,
        purpose=purpose,
        fields=json.dumps(names, ensure_ascii=False),
        row_filter=_dump_conditions(conds),
        mode=mode,
        until=until,
    )
    session.add(app)
    session.flush()
    audit.record(
        session,
        actor,
        "data.application.create",
        "data_application",
        app.id,
        after={"dataset": ds.name, "fields": names, "mode": mode, "until": until.isoformat()},
    )
    protected = {f.name for f in ds.fields if is_protected(f)}
    if ds.share_class == ShareClass.unconditional and not protected.intersection(names):
        _approve(
            session,
            actor,
            app,
            ds,
            fields=names,
            extra_filter=[],
            clear_fields=[],
            until=until,
            mode=mode,
            quota_rows_per_day=None,
            rate_per_minute=None,
            reason="",
            auto=True,
        )
    else:
        notify_org(
            session,
            f"data.application:{app.id}:new",
            org_id=ds.owner_org_id,
            message=N_("New data application {id}: {org} asks for dataset {name}."),
            id=app.id,
            org=actor.org_name,
            name=ds.name,
        )
    return app


def notify_org(session: Session, key: str, *, org_id: int, message: str, **params: Any) -> None:
    """A notice in an organisation's in-app inbox (the one the events workflow keeps: GET
    /api/v1/inbox), once per key; `message` is an English msgid translated when shown."""
    from civicgrid.events import service as events

    events.notify(session, key, message=message, org_id=org_id, kind="data", **params)


def get_application(session: Session, application_id: int) -> Application:
    app = session.get(Application, application_id)
    if app is None:
        raise NotFound("No application with this id.")
    return app


def _owned_application(session: Session, actor: Actor, application_id: int) -> tuple[Application, Dataset]:
    app = get_application(session, application_id)
    ds = session.get(Dataset, app.dataset_id)
    if ds is None:
        raise NotFound("No application with this id.")
    if ds.owner_org_id != actor.org_id:
        if app.consumer_org_id == actor.org_id:
            raise PermissionDenied(
                "Only the organisation that owns dataset {name} decides on applications for it.",
                name=ds.name,
            )
        raise NotFound("No application with this id.")
    return app, ds


def _require_pending(app: Application) -> None:
    if app.state != ApplicationState.pending:
        raise Conflict(
            "This application was already decided ({state}).", error_code="decided", state=str(app.state)
        )


def approve(
    session: Session,
    actor: Actor,
    application_id: int,
    *,
    fields: Sequence[str] | None = None,
    extra_filter: Any = None,
    clear_fields: Sequence[str] = (),
    until: date | None = None,
    mode: str | None = None,
    quota_rows_per_day: int | None = None,
    rate_per_minute: int | None = None,
    reason: str = "",
) -> Grant:
    """The owner approves, possibly narrowing: fewer fields, more row conditions (AND-ed to the
    applicant's), a shorter period, sandbox instead of api. Personal fields stay masked unless
    named in `clear_fields`."""
    app, ds = _owned_application(session, actor, application_id)
    _require_pending(app)
    asked = json.loads(app.fields)
    names = asked if fields is None else _check_fields(ds, list(fields))
    wider = [n for n in names if n not in asked]
    if wider:
        raise Invalid(
            "An approval may drop fields, not add them: {fields} were not asked for.",
            error_code="widening",
            fields=", ".join(wider),
        )
    conds = parse_conditions(ds, extra_filter)
    end = until or app.until
    _check_period(end, not_after=app.until)
    new_mode = mode or app.mode
    if new_mode not in MODES:
        raise Invalid("Access is through the api or the sandbox.", error_code="bad_mode")
    if app.mode == "sandbox" and new_mode == "api":
        raise Invalid(
            "The application asked for the sandbox only; an approval cannot widen it to the api.",
            error_code="widening",
        )
    return _approve(
        session,
        actor,
        app,
        ds,
        fields=names,
        extra_filter=conds,
        clear_fields=list(clear_fields),
        until=end,
        mode=new_mode,
        quota_rows_per_day=quota_rows_per_day,
        rate_per_minute=rate_per_minute,
        reason=reason.strip(),
        auto=False,
    )


def _approve(
    session: Session,
    actor: Actor,
    app: Application,
    ds: Dataset,
    *,
    fields: list[str],
    extra_filter: list[Condition],
    clear_fields: list[str],
    until: date,
    mode: str,
    quota_rows_per_day: int | None,
    rate_per_minute: int | None,
    reason: str,
    auto: bool,
) -> Grant:
    by_name = {f.name: f for f in ds.fields}
    clear: list[str] = []
    for n in clear_fields:
        if n not in by_name:
            raise Invalid(
                "Dataset {dataset} has no field {field}.",
                error_code="unknown_field",
                dataset=ds.name,
                field=n,
            )
        if n not in fields:
            raise Invalid("Field {field} is given in clear but is not among the granted fields.", field=n)
        if not is_protected(by_name[n]):
            raise Invalid("Field {field} is not personal; it is never masked.", field=n)
        if n not in clear:
            clear.append(n)
    if quota_rows_per_day is not None and not 1 <= quota_rows_per_day <= MAX_QUOTA_ROWS:
        raise Invalid("The daily row quota is between 1 and {max}.", max=MAX_QUOTA_ROWS)
    if rate_per_minute is not None and not 1 <= rate_per_minute <= MAX_RATE_PER_MINUTE:
        raise Invalid("The rate limit is between 1 and {max} calls a minute.", max=MAX_RATE_PER_MINUTE)
    now = utcnow()
    # One live grant per (org, dataset): a new approval supersedes the old one.
    for old in session.scalars(
        select(Grant).where(
            Grant.consumer_org_id == app.consumer_org_id,
            Grant.dataset_id == ds.id,
            Grant.revoked_at.is_(None),
            Grant.expires_at > now,
        )
    ):
        old.revoked_at = now
        audit.record(
            session, actor, "data.grant.supersede", "data_grant", old.id, extra={"by_application": app.id}
        )
    row_filter = _load_conditions(app.row_filter) + list(extra_filter)
    grant = Grant(
        application_id=app.id,
        dataset_id=ds.id,
        consumer_org_id=app.consumer_org_id,
        fields=json.dumps(fields, ensure_ascii=False),
        clear_fields=json.dumps(clear, ensure_ascii=False),
        row_filter=_dump_conditions(row_filter),
        mode=mode,
        expires_at=end_of_day(until),
        created_at=now,
    )
    if quota_rows_per_day is not None:
        grant.quota_rows_per_day = quota_rows_per_day
    if rate_per_minute is not None:
        grant.rate_per_minute = rate_per_minute
    session.add(grant)
    app.state = ApplicationState.approved
    app.decided_by = "system" if auto else actor.username
    app.decision_reason = reason
    session.flush()
    if not auto:
        notify_org(
            session,
            f"data.application:{app.id}:approved",
            org_id=app.consumer_org_id,
            message=N_("Your application {id} for dataset {name} was approved."),
            id=app.id,
            name=ds.name,
        )
    audit.record(
        session,
        actor,
        "data.application.auto_approve" if auto else "data.application.approve",
        "data_application",
        app.id,
        before={"state": "pending"},
        after={
            "state": "approved",
            "grant": grant.id,
            **{
                k: v
                for k, v in grant_dict(grant).items()
                if k
                in ("fields", "clear_fields", "row_filter", "mode", "quota_rows_per_day", "rate_per_minute")
            },
            "until": until.isoformat(),
        },
    )
    return grant


def refuse(session: Session, actor: Actor, application_id: int, *, reason: str) -> Application:
    """The owner refuses; the reason is required and shown to the applicant."""
    app, _ds = _owned_application(session, actor, application_id)
    _require_pending(app)
    reason = reason.strip()
    if not reason:
        raise Invalid("Give the applicant a reason for the refusal.", error_code="no_reason")
    app.state = ApplicationState.refused
    app.decided_by = actor.username
    app.decision_reason = reason
    notify_org(
        session,
        f"data.application:{app.id}:refused",
        org_id=app.consumer_org_id,
        message=N_("Your application {id} for dataset {name} was refused: {reason}"),
        id=app.id,
        name=_ds.name,
        reason=reason,
    )
    audit.record(
        session,
        actor,
        "data.application.refuse",
        "data_application",
        app.id,
        before={"state": "pending"},
        after={"state": "refused", "reason": reason},
    )
    return app


def withdraw(session: Session, actor: Actor, application_id: int) -> Application:
    app = get_application(session, application_id)
    if app.consumer_org_id != actor.org_id:
        raise NotFound("No application with this id.")
    _require_pending(app)
    app.state = ApplicationState.withdrawn
    app.decided_by = actor.username
    audit.record(
        session,
        actor,
        "data.application.withdraw",
        "data_application",
        app.id,
        before={"state": "pending"},
        after={"state": "withdrawn"},
    )
    return app


def revoke(session: Session, actor: Actor, grant_id: int, *, reason: str) -> Grant:
    """Ends a grant at once (the owner org, or the bureau holding data.admin); the next read is refused."""
    grant = session.get(Grant, grant_id)
    ds = session.get(Dataset, grant.dataset_id) if grant else None
    if grant is None or ds is None:
        raise NotFound("No grant with this id.")
    if ds.owner_org_id != actor.org_id and not actor.can("data.admin"):
        if grant.consumer_org_id == actor.org_id:
            raise PermissionDenied(
                "Only the organisation that owns dataset {name} can revoke its grants.", name=ds.name
            )
        raise NotFound("No grant with this id.")
    reason = reason.strip()
    if not reason:
        raise Invalid("Give a reason for the revocation.", error_code="no_reason")
    if grant.revoked_at is not None:
        return grant
    grant.revoked_at = utcnow()
    audit.record(
        session,
        actor,
        "data.grant.revoke",
        "data_grant",
        grant.id,
        before={"live": True},
        after={"live": False, "reason": reason, "dataset": ds.name},
    )
    return grant


def my_applications_stmt(actor: Actor, state: ApplicationState | None = None) -> Select[Any]:
    stmt = select(Application).where(Application.consumer_org_id == actor.org_id)
    if state:
        stmt = stmt.where(Application.state == state)
    return stmt.order_by(Application.id.desc())


def inbox_stmt(actor: Actor, state: ApplicationState | None = ApplicationState.pending) -> Select[Any]:
    """Applications for datasets the actor's org owns (the approvals inbox), oldest first."""
    stmt = (
        select(Application)
        .join(Dataset, Dataset.id == Application.dataset_id)
        .where(Dataset.owner_org_id == actor.org_id)
    )
    if state:
        stmt = stmt.where(Application.state == state)
    return stmt.order_by(Application.id)


def grants_stmt(actor: Actor, *, live_only: bool = False) -> Select[Any]:
    """Grants the actor's org holds or has given; everything for the bureau (data.admin)."""
    stmt = select(Grant).join(Dataset, Dataset.id == Grant.dataset_id)
    if not actor.can("data.admin"):
        stmt = stmt.where((Grant.consumer_org_id == actor.org_id) | (Dataset.owner_org_id == actor.org_id))
    if live_only:
        stmt = stmt.where(Grant.revoked_at.is_(None), Grant.expires_at > utcnow())
    return stmt.order_by(Grant.id.desc())


# ---- reads: audit and metering ------------------------------------------------------------

_PERSONAL_VALUE = re.compile(r"\d{6,}")


def _redact(ds: Dataset, query: dict[str, Any]) -> dict[str, Any]:
    """The query as audited: values compared with personal fields are masked (never logged in clear)."""
    protected = {f.name: mask_kind(f) for f in ds.fields if is_protected(f)}
    out = dict(query)
    filters = out.get("filters")
    if isinstance(filters, list):
        red = []
        for c in filters:
            c = c.as_dict() if isinstance(c, Condition) else dict(c)
            kind = protected.get(str(c.get("field")))
            if kind and c.get("value") is not None:
                v = c["value"]
                c["value"] = [mask_value(kind, x) for x in v] if isinstance(v, list) else mask_value(kind, v)
            red.append(c)
        out["filters"] = red
    if isinstance(out.get("q"), str) and _PERSONAL_VALUE.search(out["q"]):
        out["q"] = _PERSONAL_VALUE.sub(lambda m: mask_value("id_number", m.group(0)), out["q"])
    return out


def record_read(
    session: Session,
    actor: Actor,
    *,
    dataset: Dataset,
    channel: str,
    rows: int,
    query: dict[str, Any],
    key: ApiKey | None = None,
    policy: Policy | None = None,
) -> None:
    """Every read (API, CKAN, sandbox, a page's sample): one hash-chained audit record in the
    caller's transaction — who, which key, which dataset, the query, rows returned — and, for
    the supply channels, one count in the meter (per key, dataset, day and channel). The
    sample a dataset page shows (channel "web") is audited but not metered: it is not supply
    under a key and has no quota."""
    if channel not in (*metering.CHANNELS, WEB_CHANNEL):
        raise ValueError(channel)
    extra: dict[str, Any] = {
        "channel": channel,
        "rows": rows,
        "query": _redact(dataset, query),
    }
    if key is not None:
        extra["key_id"] = key.id
        extra["key"] = key.prefix
    if policy is not None:
        extra["grant"] = policy.grant_id
    audit.record(session, actor, "data.read", "dataset", dataset.name, extra=extra)
    if channel != WEB_CHANNEL:
        metering.meter_for(session.get_bind()).count(key.id if key else None, dataset.id, channel, rows)


# ---- rows through the API (and CKAN's datastore_search) ---------------------------------------

DEFAULT_LIMIT = 100
MAX_LIMIT = 1_000
WEB_CHANNEL = "web"  # the masked sample on a dataset page
SAMPLE_ROWS = 10
_ENGINE_OPS = {
    "eq": "=",
    "ne": "!=",
    "lt": "<",
    "lte": "<=",
    "gt": ">",
    "gte": ">=",
    "in": "in",
    "between": "between",
    "like": "like",
    "is_null": "is null",
    "not_null": "is not null",
}


@dataclass
class RowsPage:
    """One page of rows as the policy lets them out: masked in the engine, row filter applied."""

    dataset: str
    fields: list[tuple[str, str]]  # (name, type)
    masked: list[str]
    records: list[dict[str, Any]]
    total: int | None
    limit: int
    offset: int
    quota_rows_per_day: int | None = None
    quota_used: int | None = None
    millis: int = 0


def parse_sort(ds: Dataset, raw: Any) -> list[tuple[str, bool]]:
    """`"-age,name"`, `"age desc, name"` or a list of either → [(field, descending)]."""
    if raw is None or raw == "" or raw == []:
        return []
    items: list[Any] = raw if isinstance(raw, list) else str(raw).split(",")
    out: list[tuple[str, bool]] = []
    known = {f.name for f in ds.fields}
    for item in items:
        if isinstance(item, tuple | list) and len(item) == 2:
            name, desc = str(item[0]), bool(item[1])
        else:
            bits = str(item).split()
            if not bits:
                continue
            if len(bits) > 2 or (len(bits) == 2 and bits[1].lower() not in ("asc", "desc")):
                raise Invalid(
                    "Cannot sort by {sort}; write field, -field or field desc.", sort=str(item).strip()
                )
            name = bits[0]
            desc = name.startswith("-") or (len(bits) == 2 and bits[1].lower() == "desc")
            name = name.lstrip("-+")
        if name not in known:
            raise Invalid(
                "Dataset {dataset} has no field {field}.",
                error_code="unknown_field",
                dataset=ds.name,
                field=name,
            )
        out.append((name, desc))
    if len(out) > 5:
        raise Invalid("Sort by at most {max} fields.", max=5)
    return out


def _check_readable(policy: Policy, names: Iterable[str], *, use: str) -> None:
    for n in names:
        if n not in policy.fields:
            raise PermissionDenied(
                "Field {field} is not readable under your grant.", error_code="field_not_granted", field=n
            )
        if use != "select" and policy.masked(n):
            raise PermissionDenied(
                "Field {field} is masked for you, so it cannot be used to filter or sort.",
                error_code="field_masked",
                field=n,
            )


def read_rows(
    session: Session,
    *,
    actor: Actor,
    key: ApiKey | None,
    dataset: Dataset | str,
    fields: Sequence[str] = (),
    filters: Any = None,
    sort: Any = None,
    q: str = "",
    limit: int = DEFAULT_LIMIT,
    offset: int = 0,
    include_total: bool = True,
    channel: str = "api",
    org_id: int | None = None,
) -> RowsPage:
    """The one row read under a policy: 404 unknown dataset, 410 destroyed, 422 unknown field or
    bad filter, 403 no grant / field not granted / masked field in a filter or sort /
    sandbox-only grant, 429 with Retry-After for the key's rate limit or its daily row quota.
    The grant's row filter is AND-ed in, masks are applied in the engine; the read is metered
    and audited. Without a key the policy is `org_id`'s (a signed-in page reader's org), or
    the anonymous one (open data only)."""
    from civicgrid.data import engine as eng

    ds = get_dataset(session, dataset)
    reader_org = key.org_id if key is not None else (org_id or 0)
    policy = policy_for(session, reader_org, ds)
    if not policy.allows_rows:
        raise PermissionDenied(
            "Your grant for dataset {name} is for the sandbox only: query aggregates there.",
            error_code="sandbox_only",
            name=ds.name,
        )
    names = _check_fields(ds, list(fields)) if fields else list(policy.fields)
    _check_readable(policy, names, use="select")
    conds = parse_conditions(ds, filters)
    _check_readable(policy, [c.field for c in conds], use="filter")
    order = parse_sort(ds, sort)
    _check_readable(policy, [n for n, _d in order], use="sort")
    if not 0 <= int(limit) <= MAX_LIMIT:
        raise Invalid("limit is between 0 and {max}.", max=MAX_LIMIT)
    if int(offset) < 0:
        raise Invalid("offset cannot be negative.")
    quota_used: int | None = None
    if key is not None:
        wait = metering.limiter_for(session.get_bind()).take(key.id, ds.id, policy.rate_per_minute)
        if wait:
            raise TooManyRequests(
                "Rate limit of {rate} calls a minute for dataset {name} reached; retry in {seconds} s.",
                retry_after=wait,
                rate=policy.rate_per_minute,
                name=ds.name,
                seconds=wait,
            )
        quota_used = metering.meter_for(session.get_bind()).rows_used(session, key.id, ds.id)
        remaining = policy.quota_rows_per_day - quota_used
        if remaining <= 0:
            wait = metering.seconds_to_local_midnight()
            raise TooManyRequests(
                "The daily quota of {quota} rows for dataset {name} is used up; it renews at midnight.",
                retry_after=wait,
                quota=policy.quota_rows_per_day,
                name=ds.name,
            )
        limit = min(int(limit), remaining)  # the last page before the quota is cut short
    plan = eng.QueryPlan(
        fields=names,
        filters=[*policy.engine_filters(), *(eng.Filter(c.field, _ENGINE_OPS[c.op], c.value) for c in conds)],
        sort=[eng.Sort(n, d) for n, d in order],
        limit=int(limit),
        offset=int(offset),
        masks={n: k for n, k in policy.masks.items() if n in names},
        q=q,
        q_fields=[n for n in names if not policy.masked(n)] if q else None,
        with_total=include_total,
    )
    result = _run(session, ds, plan)
    records = result.records()
    record_read(
        session,
        actor,
        dataset=ds,
        channel=channel,
        rows=len(records),
        query={
            "fields": names,
            "filters": [c.as_dict() for c in conds],
            "sort": [f"-{n}" if d else n for n, d in order],
            "q": q,
            "limit": int(limit),
            "offset": int(offset),
        },
        key=key,
        policy=policy,
    )
    types = {f.name: str(f.type) for f in ds.fields}
    return RowsPage(
        dataset=ds.name,
        fields=[(n, types.get(n, "string")) for n in names],
        masked=[n for n in names if policy.masked(n)],
        records=records,
        total=result.total,
        limit=int(limit),
        offset=int(offset),
        quota_rows_per_day=policy.quota_rows_per_day if key is not None else None,
        quota_used=(quota_used + len(records)) if quota_used is not None else None,
        millis=result.millis,
    )


def _run(session: Session, ds: Dataset, plan: Any) -> Any:
    """The query through the engine over the dataset's current version."""
    from civicgrid.data import service

    return service.query(session, ds, plan)
