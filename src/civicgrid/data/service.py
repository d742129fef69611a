"""The data catalogue (数据目录): datasets, their fields, metadata versions and data versions.

Rules: names are slugs, field names identifiers; a dataset that is not shareable is never
open; owners are orgs in the actor's scope (a data steward registers only for their own
org, the bureau's admin for any); every change is audited and snapshotted as a
MetadataVersion. Readers see what `visible_stmt` allows. The data itself is reached only
through the engine (`engine()`, `dataset_files`, `query`, `run_sql`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import Select, or_, select
from sqlalchemy.orm import Session

from civicgrid.accounts.models import Org
from civicgrid.accounts.permissions import Permission
from civicgrid.core import audit
from civicgrid.core.auth import Actor
from civicgrid.core.config import get_settings
from civicgrid.core.errors import Conflict, Invalid, NotFound, PermissionDenied
from civicgrid.data.engine import MASKS, Engine, QueryPlan, QueryResult, SqlResult, View, get_engine
from civicgrid.data.models import (
    Dataset,
    DatasetField,
    DatasetState,
    DataVersion,
    FieldType,
    Grade,
    MetadataVersion,
    OpenClass,
    Sensitivity,
    ShareClass,
    Theme,
    VersionState,
)
from civicgrid.regions.models import Region

P = Permission
SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9-]{1,98}[a-z0-9]$")
FIELD_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
#: Per-field rules (engine.Rules checks the values; "blocking" fails a whole load on a break;
#: "cluster" sorts a load's rows by the field, see ingest.cluster_fields).
FLAG_RULES = ("not_null", "id_number", "mobile", "blocking", "cluster")
RULE_KEYS = {*FLAG_RULES, "regex", "min", "max", "date"}
#: Dataset attributes a metadata change may set (fields go through `fields=`).
EDITABLE = (
    "title",
    "title_en",
    "description",
    "description_en",
    "tags",
    "theme",
    "grade",
    "share_class",
    "share_condition",
    "open_class",
    "update_frequency",
    "source_system",
    "spatial_scope",
    "retention_days",
    "k_threshold",
)


# ---- the engine ---------------------------------------------------------------------------


def engine() -> Engine:
    """The process's engine over CIVICGRID_DATA_DIR (API, CLI and worker share it)."""
    settings = get_settings()
    return get_engine(settings.data_dir, salt=settings.secret_key)


# ---- shapes -------------------------------------------------------------------------------


def field_dict(f: DatasetField) -> dict[str, Any]:
    return {
        "name": f.name,
        "title": f.title,
        "type": str(f.type),
        "description": f.description,
        "sensitivity": str(f.sensitivity),
        "mask": f.mask,
        "primary_key": f.primary_key,
        "is_timestamp": f.is_timestamp,
        "rules": json.loads(f.rules or "{}"),
    }


def dataset_dict(ds: Dataset) -> dict[str, Any]:
    """The whole catalogue entry: what a MetadataVersion snapshots and the audit diffs."""
    out: dict[str, Any] = {"name": ds.name, "owner_org_id": ds.owner_org_id}
    for key in EDITABLE:
        value = getattr(ds, key)
        out[key] = json.loads(value) if key == "tags" else (str(value) if hasattr(value, "value") else value)
    out["fields"] = [field_dict(f) for f in ds.fields]
    out["state"] = str(ds.state)
    return out


def tags_of(ds: Dataset) -> list[str]:
    return [str(t) for t in json.loads(ds.tags or "[]")]


def rules_of(f: DatasetField) -> dict[str, Any]:
    return dict(json.loads(f.rules or "{}"))


# ---- reading the catalogue ------------------------------------------------------------------


def get_dataset(session: Session, name: str) -> Dataset:
    ds = session.scalar(select(Dataset).where(Dataset.name == name))
    if ds is None:
        raise NotFound("No dataset named {name}.", name=name, error_code="unknown_dataset")
    return ds


def _scope_orgs(actor: Actor) -> Select[Any]:
    return (
        select(Org.id)
        .join(Region, Org.region_id == Region.id)
        .where(Region.path.startswith(actor.region_path))
    )


def visible_stmt(actor: Actor) -> Select[Any]:
    """Datasets the actor may see in the catalogue: the bureau (data.admin) sees every one in
    its scope; other readers (data.read) see every active dataset that is shareable or open,
    and all of their own org's. Without data.read: nothing."""
    stmt = select(Dataset)
    if actor.can(P.data_admin):
        return stmt.where(Dataset.owner_org_id.in_(_scope_orgs(actor)))
    if not actor.can(P.data_read):
        return stmt.where(Dataset.id.is_(None))
    return stmt.where(
        or_(
            Dataset.owner_org_id == actor.org_id,
            (Dataset.state == DatasetState.active)
            & or_(Dataset.share_class != ShareClass.none, Dataset.open_class != OpenClass.closed),
        )
    )


def visible_dataset_ids(session: Session, actor: Actor) -> set[int]:
    return set(session.scalars(visible_stmt(actor).with_only_columns(Dataset.id)).all())


def get_visible(session: Session, actor: Actor, name: str) -> Dataset:
    """The dataset if the actor may see it; 404 otherwise (its existence is not disclosed)."""
    ds = session.scalar(visible_stmt(actor).where(Dataset.name == name))
    if ds is None:
        raise NotFound("No dataset named {name}.", name=name, error_code="unknown_dataset")
    return ds


def list_stmt(
    actor: Actor,
    *,
    owner_org_id: int | None = None,
    theme: Theme | None = None,
    share_class: ShareClass | None = None,
    q: str = "",
) -> Select[Any]:
    """The visible catalogue, filtered, by name (full-text search lives in data.search)."""
    stmt = visible_stmt(actor).order_by(Dataset.name)
    if owner_org_id is not None:
        stmt = stmt.where(Dataset.owner_org_id == owner_org_id)
    if theme is not None:
        stmt = stmt.where(Dataset.theme == theme)
    if share_class is not None:
        stmt = stmt.where(Dataset.share_class == share_class)
    if q:
        stmt = stmt.where(Dataset.title.contains(q) | Dataset.name.contains(q))
    return stmt


def can_manage(actor: Actor, ds: Dataset) -> bool:
    """Stewards manage their own org's datasets; the bureau (data.admin) every one."""
    if actor.can(P.data_admin):
        return True
    return actor.can(P.data_manage) and ds.owner_org_id == actor.org_id


def get_managed(session: Session, actor: Actor, name: str) -> Dataset:
    ds = get_visible(session, actor, name)
    if not can_manage(actor, ds):
        raise PermissionDenied("Only the owner's data stewards may change dataset {name}.", name=name)
    return ds


# ---- writing the catalogue ------------------------------------------------------------------


def _check_classes(share: ShareClass, open_: OpenClass, condition: str) -> None:
    if share == ShareClass.none and open_ != OpenClass.closed:
        raise Invalid(
            "A dataset that is not shared can never be open: set the open class to not open.",
            error_code="share_open_class",
        )
    if share in (ShareClass.conditional, ShareClass.none) and not condition.strip():
        raise Invalid(
            "Conditional sharing needs its condition, and not sharing needs its basis.",
            error_code="share_condition",
        )


def _owner(session: Session, actor: Actor, org_code: str | None) -> Org:
    if not org_code:
        org = session.get(Org, actor.org_id)
        if org is None:
            raise NotFound("No organisation with code {code}.", code=str(actor.org_id))
        return org
    org = session.scalar(select(Org).where(Org.code == org_code))
    if org is None:
        raise NotFound("No organisation with code {code}.", code=org_code)
    if org.id != actor.org_id:
        region = session.get(Region, org.region_id)
        if not actor.can(P.data_admin) or region is None or not actor.in_scope(region.path):
            raise PermissionDenied("You may register datasets only for your own organisation.")
    return org


def clean_rules(name: str, ftype: FieldType, rules: Mapping[str, Any] | None) -> dict[str, Any]:
    """Rules as stored: known keys only, values checked (a bad regex is refused now, not at load)."""
    rules = dict(rules or {})
    unknown = sorted(set(rules) - RULE_KEYS)
    if unknown:
        raise Invalid(
            "Field {field}: unknown rule {rule}. The rules are: {known}.",
            field=name,
            rule=", ".join(unknown),
            known=", ".join(sorted(RULE_KEYS)),
        )
    out: dict[str, Any] = {}
    for key in FLAG_RULES:
        value = rules.get(key)
        if value not in (None, True, False):  # "yes", "false", 2: say so rather than guess
            raise Invalid("Field {field}: rule {rule} is true or false.", field=name, rule=key)
        if value:
            out[key] = True
    if rules.get("regex"):
        reason = engine().check_regex(str(rules["regex"]))
        if reason:
            raise Invalid("Field {field}: the pattern is not valid ({reason}).", field=name, reason=reason)
        out["regex"] = str(rules["regex"])
    if rules.get("date"):
        out["date"] = str(rules["date"])
    for key in ("min", "max"):
        value = rules.get(key)
        if value is None or value == "":
            continue
        if ftype in (FieldType.date, FieldType.datetime):
            try:
                from datetime import date

                date.fromisoformat(str(value)[:10])
            except ValueError:
                raise Invalid(
                    "Field {field}: {rule} must be a date (YYYY-MM-DD).", field=name, rule=key
                ) from None
            out[key] = str(value)
        else:
            try:
                out[key] = float(value)
            except (TypeError, ValueError):
                raise Invalid("Field {field}: {rule} must be a number.", field=name, rule=key) from None
    if (
        "min" in out
        and "max" in out
        and str(out["min"]) > str(out["max"])
        and not isinstance(out["min"], float)
    ):
        raise Invalid("Field {field}: min is above max.", field=name)
    if isinstance(out.get("min"), float) and isinstance(out.get("max"), float) and out["min"] > out["max"]:
        raise Invalid("Field {field}: min is above max.", field=name)
    return out


def _make_fields(specs: Sequence[Mapping[str, Any]]) -> list[DatasetField]:
    seen: set[str] = set()
    out: list[DatasetField] = []
    for pos, spec in enumerate(specs):
        name = str(spec.get("name", ""))
        if not FIELD_RE.match(name):
            raise Invalid(
                "Field name {field} is not an identifier: lowercase letters, digits and underscores, "
                "starting with a letter.",
                field=name,
            )
        if name in seen:
            raise Invalid("Field {field} appears twice.", field=name)
        seen.add(name)
        try:
            ftype = FieldType(str(spec.get("type", "string")))
            sensitivity = Sensitivity(str(spec.get("sensitivity", "none")))
        except ValueError:
            raise Invalid("Field {field}: unknown type or sensitivity.", field=name) from None
        mask = str(spec.get("mask") or "")
        if mask and mask not in MASKS:
            raise Invalid("Unknown mask {mask}.", mask=mask)
        if sensitivity != Sensitivity.none and not mask:
            mask = "partial"  # personal data is never shown in clear by default
        out.append(
            DatasetField(
                position=pos,
                name=name,
                title=str(spec.get("title") or ""),
                type=ftype,
                description=str(spec.get("description") or ""),
                sensitivity=sensitivity,
                mask=mask,
                primary_key=bool(spec.get("primary_key")),
                is_timestamp=bool(spec.get("is_timestamp")),
                rules=json.dumps(
                    clean_rules(name, ftype, spec.get("rules")), ensure_ascii=False, sort_keys=True
                ),
            )
        )
    return out


def _snapshot(session: Session, actor: Actor, ds: Dataset) -> MetadataVersion:
    mv = MetadataVersion(
        dataset_id=ds.id,
        version=ds.metadata_version,
        snapshot=json.dumps(dataset_dict(ds), ensure_ascii=False, sort_keys=True, default=str),
        changed_by=actor.username,
    )
    session.add(mv)
    session.flush()
    return mv


def _apply(ds: Dataset, values: Mapping[str, Any]) -> None:
    for key, value in values.items():
        if key not in EDITABLE:
            raise Invalid("Unknown dataset attribute {name}.", name=key)
        if key == "tags":
            tags = sorted({str(t).strip() for t in (value or []) if str(t).strip()})
            setattr(ds, key, json.dumps(tags, ensure_ascii=False))
        elif key in ("theme", "grade", "share_class", "open_class"):
            enum_cls = {"theme": Theme, "grade": Grade, "share_class": ShareClass, "open_class": OpenClass}[
                key
            ]
            try:
                setattr(ds, key, enum_cls(str(value)))
            except ValueError:
                raise Invalid("Unknown value {value} for {name}.", value=str(value), name=key) from None
        elif key in ("retention_days", "k_threshold"):
            if value is not None and (int(value) < 1 or int(value) > 1_000_000):
                raise Invalid("{name} must be a positive number.", name=key)
            setattr(ds, key, None if value is None else int(value))
        else:
            setattr(ds, key, "" if value is None else str(value))


def create_dataset(
    session: Session,
    actor: Actor,
    *,
    name: str,
    title: str,
    theme: Theme | str,
    grade: Grade | str,
    share_class: ShareClass | str,
    open_class: OpenClass | str,
    owner_org: str | None = None,
    fields: Sequence[Mapping[str, Any]] = (),
    **attrs: Any,
) -> Dataset:
    """Register a dataset (metadata version 1). `owner_org` is an org code; the actor's own
    org when left out. Raises Invalid, Conflict (name taken) or PermissionDenied."""
    if not (actor.can(P.data_manage) or actor.can(P.data_admin)):
        raise PermissionDenied("Your role does not allow this.")
    if not SLUG_RE.match(name):
        raise Invalid(
            "A dataset name is 3 to 100 lowercase letters, digits and hyphens, e.g. village-population.",
            error_code="bad_name",
        )
    if not title.strip():
        raise Invalid("A dataset needs a title.")
    if session.scalar(select(Dataset.id).where(Dataset.name == name)) is not None:
        raise Conflict("A dataset named {name} already exists.", name=name)
    org = _owner(session, actor, owner_org)
    ds = Dataset(name=name, owner_org_id=org.id, metadata_version=1)
    _apply(
        ds,
        {"title": title, "theme": theme, "grade": grade, "share_class": share_class, "open_class": open_class}
        | attrs,
    )
    _check_classes(ds.share_class, ds.open_class, ds.share_condition)
    ds.fields = _make_fields(fields)
    session.add(ds)
    session.flush()
    _snapshot(session, actor, ds)
    audit.record(session, actor, "dataset.create", "dataset", ds.name, after=dataset_dict(ds))
    return ds


def update_dataset(
    session: Session,
    actor: Actor,
    name: str,
    *,
    expected_version: int | None = None,
    fields: Sequence[Mapping[str, Any]] | None = None,
    **attrs: Any,
) -> Dataset:
    """Change a dataset's metadata and/or its fields; the previous state stays as a metadata
    version. `expected_version` (the metadata_version the editor saw) guards against two
    stewards overwriting each other (409)."""
    ds = get_managed(session, actor, name)
    if ds.state != DatasetState.active:
        raise Conflict("Dataset {name} has been destroyed and cannot change.", name=name)
    if expected_version is not None and expected_version != ds.metadata_version:
        raise Conflict("Someone else changed this a moment ago. Reload and try again.")
    before = dataset_dict(ds)
    saved = {k: getattr(ds, k) for k in EDITABLE}
    try:
        _apply(ds, attrs)
        _check_classes(ds.share_class, ds.open_class, ds.share_condition)
        new = _make_fields(fields) if fields is not None else None
    except Invalid:
        for k, v in saved.items():  # bad input changes nothing, not even the session's copy
            setattr(ds, k, v)
        raise
    if new is not None:
        ds.fields.clear()
        session.flush()
        ds.fields.extend(new)
    after = dataset_dict(ds)
    if after == before:
        return ds
    ds.metadata_version += 1
    session.flush()
    _snapshot(session, actor, ds)
    audit.record(session, actor, "dataset.update", "dataset", ds.name, before=before, after=after)
    return ds


def metadata_versions(session: Session, ds: Dataset) -> list[MetadataVersion]:
    return list(
        session.scalars(
            select(MetadataVersion)
            .where(MetadataVersion.dataset_id == ds.id)
            .order_by(MetadataVersion.version.desc())
        ).all()
    )


# ---- data versions ---------------------------------------------------------------------------


def data_versions(session: Session, ds: Dataset) -> list[DataVersion]:
    return list(
        session.scalars(
            select(DataVersion).where(DataVersion.dataset_id == ds.id).order_by(DataVersion.version.desc())
        ).all()
    )


def get_version(session: Session, ds: Dataset, version: int) -> DataVersion:
    dv = session.scalar(
        select(DataVersion).where(DataVersion.dataset_id == ds.id, DataVersion.version == version)
    )
    if dv is None:
        raise NotFound("Dataset {name} has no version {version}.", name=ds.name, version=version)
    return dv


def current_version(session: Session, ds: Dataset) -> DataVersion | None:
    if ds.current_version_id is None:
        return None
    dv = session.get(DataVersion, ds.current_version_id)
    return dv if dv is not None and dv.state == VersionState.ready else None


def dataset_files(session: Session, ds: Dataset) -> list[Path]:
    """The Parquet files of the dataset's current ready version ([] before the first load).
    An append version lists the earlier rows' files too: each version folder is complete."""
    dv = current_version(session, ds)
    return engine().version_files(dv.path) if dv else []


def quality(dv: DataVersion) -> dict[str, Any]:
    return dict(json.loads(dv.quality or "{}"))


# ---- reading the data (for the data API, CKAN and the sandbox) ---------------------------------


def query(session: Session, ds: Dataset, plan: QueryPlan) -> QueryResult:
    """Run a query plan (already checked against the reader's policy) on the current version."""
    return engine().query(dataset_files(session, ds), plan)


class ViewPolicy(Protocol):
    """What `run_sql` needs of a policy: the visible fields and the masks to apply."""

    @property
    def fields(self) -> Sequence[str]: ...

    @property
    def masks(self) -> Mapping[str, str]: ...


def run_sql(
    session: Session,
    sql: str,
    views: Mapping[str, tuple[int, ViewPolicy]],
    *,
    timeout_s: float = 10.0,
    memory_limit: str = "512MB",
    max_rows: int = 10_000,
) -> SqlResult:
    """Run a validated SELECT over views {view name: (dataset id, policy)}: each view shows the
    current version of the dataset with only the policy's fields, masked as it says."""
    specs: dict[str, View] = {}
    for view, (dataset_id, policy) in views.items():
        ds = session.get(Dataset, dataset_id)
        if ds is None:
            raise NotFound("No dataset with this id.")
        files = dataset_files(session, ds)
        if not files:
            raise Invalid("Dataset {name} has no data yet.", name=ds.name, error_code="no_data")
        specs[view] = View(files=files, fields=list(policy.fields), masks=dict(policy.masks))
    return engine().run_sql(sql, specs, timeout=timeout_s, memory_limit=memory_limit, max_rows=max_rows)
