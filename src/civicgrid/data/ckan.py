"""CKAN-compatible read actions, so CKAN clients and tools (ckanapi, harvesters) work unchanged.

Our datasets are CKAN packages with one resource each (the datastore table of the current data
version); organizations are the owner orgs; tags are the dataset tags. Ids are UUIDs derived
from the names (uuid5), so they are stable and the same on every installation. The caller's
API key (raw, in the Authorization header, as CKAN sends it) decides what it may see: without
a key only open datasets' metadata and rows; with a consumer's data key what its grants allow.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from civicgrid.accounts.models import Org
from civicgrid.accounts.permissions import Permission
from civicgrid.core.auth import Actor
from civicgrid.core.errors import AppError
from civicgrid.core.i18n import gettext
from civicgrid.data import search
from civicgrid.data.models import ApiKey, Dataset, DatasetState, OpenClass, ShareClass

CKAN_VERSION = "2.10.4"
NAMESPACE = uuid.UUID("6f1c6a52-8e0c-5b8e-9a37-3c1d2b7a4e10")  # CivicGrid's uuid5 namespace
MAX_ROWS = 1000  # package_search rows
MAX_LIMIT = 32000  # datastore_search limit (CKAN's ckan.datastore.search.rows_max default)
DEFAULT_LIMIT = 100
#: Calls a minute per client address without an API key (any action), unless set by
#: CIVICGRID_CKAN_ANONYMOUS_PER_MINUTE. Keyed callers have their grant's limits instead.
ANONYMOUS_PER_MINUTE = 120

NOT_FOUND = "Not Found Error"
VALIDATION = "Validation Error"
AUTHORIZATION = "Authorization Error"

ANONYMOUS = Actor(
    user_id=0,
    username="anonymous",
    display_name="anonymous",
    membership_id=0,
    org_id=0,
    org_name="",
    role="anonymous",
    region_id=0,
    region_path="/",
    via="ckan",
)


class CkanError(Exception):
    """An action's failure in CKAN's terms: its __type, an HTTP status and a translated message."""

    def __init__(self, kind: str, message: str, status: int, *, on: str = "", **params: Any) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.params = params
        self.status = status
        self.on = on  # the parameter a Validation Error is about
        self.retry_after: int | None = None

    def body(self) -> dict[str, Any]:
        text = gettext(self.message, **self.params)
        error: dict[str, Any] = {"__type": self.kind, "message": text}
        if self.on:
            error[self.on] = [text]  # CKAN's Validation Error lists messages per field
        return error


def not_found(message: str, **params: Any) -> CkanError:
    return CkanError(NOT_FOUND, message, 404, **params)


def invalid(field: str, message: str, **params: Any) -> CkanError:
    return CkanError(VALIDATION, message, 409, on=field, **params)


def denied(message: str, **params: Any) -> CkanError:
    return CkanError(AUTHORIZATION, message, 403, **params)


def anonymous_per_minute() -> int:
    """Calls a minute one client address may make without a key (CIVICGRID_CKAN_ANONYMOUS_PER_MINUTE)."""
    try:
        return max(1, int(os.environ.get("CIVICGRID_CKAN_ANONYMOUS_PER_MINUTE", "")))
    except ValueError:
        return ANONYMOUS_PER_MINUTE


def rate_limited(per_minute: int, wait: int) -> CkanError:
    """429 for anonymous callers over their limit, in CKAN's envelope, with Retry-After."""
    err = CkanError(
        AUTHORIZATION,
        "Too many requests without an API key from your address (limit {rate} a minute); "
        "retry in {seconds} s, or use an API key.",
        429,
        rate=per_minute,
        seconds=wait,
    )
    err.retry_after = wait
    return err


def from_app_error(exc: AppError) -> CkanError:
    """One of our errors in CKAN's shape (404/410 → Not Found, 401/403/429 → Authorization, else
    Validation). A destroyed dataset keeps its 410, so a client can tell it from an unknown name."""
    if exc.status in (404, 410):
        kind, status = NOT_FOUND, exc.status
    elif exc.status in (401, 403):
        kind, status = AUTHORIZATION, 403
    elif exc.status == 429:
        kind, status = AUTHORIZATION, 429
    else:
        kind, status = VALIDATION, 409
    err = CkanError(kind, exc.message, status, **exc.params)
    err.retry_after = getattr(exc, "retry_after", None)
    return err


@dataclass(frozen=True)
class Caller:
    """Who calls: anonymous (no key) or a consumer org through one of its data keys."""

    actor: Actor
    key: ApiKey | None = None

    @property
    def org_id(self) -> int:
        return self.key.org_id if self.key else 0


def caller_for(session: Session, clear_key: str) -> Caller:
    """The caller for a raw key ("" for anonymous); an unknown, revoked or expired key is refused."""
    from civicgrid.data import keys

    if not clear_key:
        return Caller(ANONYMOUS)
    try:
        key = keys.resolve_key(session, clear_key)
        return Caller(keys.key_actor(session, key), key)
    except AppError as exc:
        raise from_app_error(exc) from exc


# ---- ids and shapes ------------------------------------------------------------------------


def package_id(name: str) -> str:
    return str(uuid.uuid5(NAMESPACE, f"package:{name}"))


def resource_id(name: str) -> str:
    return str(uuid.uuid5(NAMESPACE, f"resource:{name}"))


def org_id(code: str) -> str:
    return str(uuid.uuid5(NAMESPACE, f"organization:{code}"))


def _iso(at: datetime | None) -> str | None:
    return at.replace(tzinfo=None).isoformat() if at else None


def org_dict(org: Org, package_count: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": org_id(org.code),
        "name": org.code,
        "title": org.name,
        "display_name": org.name,
        "description": org.name_en,
        "type": "organization",
        "is_organization": True,
        "state": "active" if org.active else "deleted",
        "approval_status": "approved",
        "image_url": "",
        "created": _iso(org.created_at),
    }
    if package_count is not None:
        out["package_count"] = package_count
    return out


def _tags(ds: Dataset) -> list[str]:
    return [str(t) for t in json.loads(ds.tags or "[]")]


def package_dict(ds: Dataset, org: Org, base_url: str) -> dict[str, Any]:
    """A dataset as a CKAN package: one datastore resource, our catalogue fields as extras."""
    pid = package_id(ds.name)
    rid = resource_id(ds.name)
    has_data = ds.current_version_id is not None
    extras = {
        "title_en": ds.title_en,
        "description_en": ds.description_en,
        "theme": str(ds.theme),
        "grade": str(ds.grade),
        "share_class": str(ds.share_class),
        "share_condition": ds.share_condition,
        "open_class": str(ds.open_class),
        "update_frequency": ds.update_frequency,
        "source_system": ds.source_system,
        "spatial_scope": ds.spatial_scope,
        "k_threshold": str(ds.k_threshold),
    }
    resource = {
        "id": rid,
        "package_id": pid,
        "name": ds.title,
        "description": ds.description,
        "format": "JSON",
        "mimetype": "application/json",
        "url": f"{base_url}api/3/action/datastore_search?resource_id={rid}",
        "url_type": "datastore",
        "datastore_active": has_data,
        "state": "active",
        "position": 0,
        "created": _iso(ds.created_at),
        "last_modified": _iso(ds.updated_at),
        "fields": [
            {
                "id": f.name,
                "type": _ckan_type(str(f.type)),
                "info": {"label": f.title, "notes": f.description},
            }
            for f in ds.fields
        ],
    }
    tags = _tags(ds)
    return {
        "id": pid,
        "name": ds.name,
        "title": ds.title,
        "notes": ds.description,
        "type": "dataset",
        "state": "active",
        "private": ds.open_class != OpenClass.open,
        "version": str(ds.metadata_version),
        "metadata_created": _iso(ds.created_at),
        "metadata_modified": _iso(ds.updated_at),
        "owner_org": org_id(org.code),
        "organization": org_dict(org),
        "author": org.name,
        "maintainer": org.name,
        "license_id": "notspecified",
        "license_title": "License not specified",
        "url": "",
        "tags": [
            {
                "id": str(uuid.uuid5(NAMESPACE, f"tag:{t}")),
                "name": t,
                "display_name": t,
                "state": "active",
                "vocabulary_id": None,
            }
            for t in tags
        ],
        "num_tags": len(tags),
        "groups": [],
        "extras": [{"key": k, "value": v} for k, v in extras.items()],
        "resources": [resource],
        "num_resources": 1,
    }


def _ckan_type(ftype: str) -> str:
    return {
        "string": "text",
        "integer": "int",
        "float": "float",
        "boolean": "bool",
        "date": "date",
        "datetime": "timestamp",
    }.get(ftype, "text")


# ---- parameters ----------------------------------------------------------------------------


def _int(params: Mapping[str, Any], name: str, default: int, lo: int, hi: int) -> int:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise invalid(name, "{name} must be a whole number.", name=name) from None
    if not lo <= value <= hi:
        raise invalid(name, "{name} must be between {lo} and {hi}.", name=name, lo=lo, hi=hi)
    return value


def _bool(params: Mapping[str, Any], name: str, default: bool) -> bool:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    if isinstance(raw, bool):
        return raw
    text = str(raw).lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise invalid(name, "{name} must be true or false.", name=name)


def _list(params: Mapping[str, Any], name: str) -> list[str]:
    """A list given as a JSON list, a comma-separated string or repeated parameters."""
    raw = params.get(name)
    if raw is None or raw == "":
        return []
    if isinstance(raw, list):
        return [str(x).strip() for x in raw if str(x).strip()]
    text = str(raw).strip()
    if text.startswith("["):
        try:
            value = json.loads(text)
        except ValueError:
            raise invalid(name, "{name} is not a valid JSON list.", name=name) from None
        if not isinstance(value, list):
            raise invalid(name, "{name} is not a valid JSON list.", name=name)
        return [str(x).strip() for x in value if str(x).strip()]
    return [p.strip() for p in text.split(",") if p.strip()]


def _str(params: Mapping[str, Any], name: str) -> str:
    raw = params.get(name)
    if raw is None:
        return ""
    if isinstance(raw, list | dict):
        raise invalid(name, "{name} must be text.", name=name)
    return str(raw).strip()


# ---- visibility ----------------------------------------------------------------------------


def visible_datasets(session: Session, caller: Caller) -> list[Dataset]:
    """Datasets whose metadata the caller may see, by name: open ones without a key; with a
    key, what a catalogue reader (data.read) of the key's org sees."""
    from civicgrid.data import service

    stmt = select(Dataset).where(Dataset.state == DatasetState.active).order_by(Dataset.name)
    rows = list(session.scalars(stmt))
    if caller.key is None:
        return [d for d in rows if d.open_class == OpenClass.open]
    reader = replace(caller.actor, permissions=frozenset({str(Permission.data_read)}))
    ids = service.visible_dataset_ids(session, reader)
    return [d for d in rows if d.id in ids]


def _find_dataset(session: Session, caller: Caller, ident: str, *, field: str) -> Dataset:
    if not ident:
        raise invalid(field, "Missing value: {name}.", name=field)
    for d in visible_datasets(session, caller):
        if ident in (d.name, package_id(d.name), resource_id(d.name)):
            return d
    gone = _destroyed(session, caller, ident)
    if gone is not None:
        from civicgrid.data import access

        raise from_app_error(access.destroyed_error(session, gone))
    raise not_found("No dataset or resource {id} that you may see.", id=ident)


def _destroyed(session: Session, caller: Caller, ident: str) -> Dataset | None:
    """A destroyed dataset named by `ident` that the caller could see while it was live (open
    ones for anyone; with a key, its org's own and the shareable or open ones), so it is told
    the data was destroyed, as the other channels say; to anyone else the name stays unknown."""
    for d in session.scalars(select(Dataset).where(Dataset.state == DatasetState.destroyed)):
        if ident not in (d.name, package_id(d.name), resource_id(d.name)):
            continue
        if caller.key is None:
            seen = d.open_class == OpenClass.open
        else:
            seen = (
                d.owner_org_id == caller.org_id
                or d.share_class != ShareClass.none
                or d.open_class != OpenClass.closed
            )
        if seen:
            return d
    return None


def _orgs(session: Session, ids: set[int]) -> dict[int, Org]:
    if not ids:
        return {}
    return {o.id: o for o in session.scalars(select(Org).where(Org.id.in_(ids)))}


# ---- actions ---------------------------------------------------------------------------------


@dataclass
class Context:
    session: Session
    caller: Caller
    base_url: str  # ends with "/"


def status_show(ctx: Context, params: Mapping[str, Any]) -> dict[str, Any]:
    """The site's identity and CKAN version, as CKAN reports it."""
    return {
        "ckan_version": CKAN_VERSION,
        "site_url": ctx.base_url.rstrip("/"),
        "site_title": "CivicGrid",
        "site_description": gettext("CivicGrid public data platform (CKAN-compatible read API)"),
        "locale_default": "zh_Hans_CN",
        "error_emails_to": None,
        "extensions": ["datastore"],
    }


def package_list(ctx: Context, params: Mapping[str, Any]) -> list[str]:
    limit = _int(params, "limit", 0, 0, 100_000)
    offset = _int(params, "offset", 0, 0, 10**9)
    names = [d.name for d in visible_datasets(ctx.session, ctx.caller)]
    return names[offset : offset + limit] if limit else names[offset:]


def package_show(ctx: Context, params: Mapping[str, Any]) -> dict[str, Any]:
    ds = _find_dataset(ctx.session, ctx.caller, _str(params, "id") or _str(params, "name"), field="id")
    org = ctx.session.get(Org, ds.owner_org_id)
    assert org is not None
    return package_dict(ds, org, ctx.base_url)


_FQ_TERM = re.compile(r'([+-]?)([A-Za-z_]+):(?:"([^"]*)"|(\S+))')
_FQ_FIELDS = {
    "organization": "organization",
    "owner_org": "owner_org",
    "tags": "tag",
    "tag": "tag",
    "name": "name",
    "theme": "theme",
    "groups": "theme",
    "share_class": "share_class",
    "open_class": "open_class",
    "res_format": "res_format",
    "dataset_type": "type",
    "type": "type",
    "state": "state",
    "capacity": "capacity",
}
FACET_FIELDS = {
    "organization": "organization",
    "tags": "tags",
    "groups": "theme",
    "theme": "theme",
    "share_class": "share_class",
    "open_class": "open_class",
    "res_format": "res_format",
    "license_id": "license_id",
}


def _parse_query(text: str, field: str) -> tuple[list[tuple[bool, str, str]], str]:
    """Solr-style `field:value` terms (with + or - before them) and the remaining free text."""
    terms: list[tuple[bool, str, str]] = []

    def take(m: re.Match[str]) -> str:
        sign, name, quoted, bare = m.groups()
        if name not in _FQ_FIELDS:
            if field == "q":
                return m.group(0)  # "a:b" in q without a known field is just text
            raise invalid(field, "Unknown field in {param}: {name}.", param=field, name=name)
        terms.append((sign == "-", _FQ_FIELDS[name], quoted if quoted is not None else bare))
        return " "

    rest = _FQ_TERM.sub(take, text or "")
    rest = rest.replace("*:*", " ").strip()
    return terms, rest


def _term_matches(ds: Dataset, org: Org, name: str, value: str) -> bool:
    value = value.strip("()")
    if value == "*":
        return True
    match name:
        case "organization":
            return org.code == value
        case "owner_org":
            return value in (org_id(org.code), org.code)
        case "tag":
            return value in _tags(ds)
        case "name":
            return ds.name == value
        case "theme":
            return str(ds.theme) == value
        case "share_class":
            return str(ds.share_class) == value
        case "open_class":
            return str(ds.open_class) == value
        case "res_format":
            return value.upper() == "JSON"
        case "type":
            return value == "dataset"
        case "state":
            return value == "active"
        case "capacity":
            return value == ("public" if ds.open_class == OpenClass.open else "private")
    return False


_SORTS: dict[str, Callable[[Dataset, float], Any]] = {
    "score": lambda d, s: s,
    "name": lambda d, s: d.name,
    "title_string": lambda d, s: d.title,
    "title": lambda d, s: d.title,
    "metadata_modified": lambda d, s: d.updated_at,
    "metadata_created": lambda d, s: d.created_at,
}


def _parse_sort(text: str) -> list[tuple[str, bool]]:
    out: list[tuple[str, bool]] = []
    for part in (text or "score desc, metadata_modified desc").split(","):
        bits = part.split()
        if not bits:
            continue
        name = bits[0]
        direction = bits[1].lower() if len(bits) > 1 else "asc"
        if name not in _SORTS or direction not in ("asc", "desc") or len(bits) > 2:
            raise invalid(
                "sort",
                "Cannot sort by {sort}; use score, name, title_string, metadata_modified or "
                "metadata_created with asc or desc.",
                sort=part.strip(),
            )
        out.append((name, direction == "desc"))
    return out


def package_search(ctx: Context, params: Mapping[str, Any]) -> dict[str, Any]:
    """Free text through the unified search (jieba + BM25), Solr-style fq filters, CKAN facets."""
    rows = _int(params, "rows", 10, 0, MAX_ROWS)
    start = _int(params, "start", 0, 0, 10**9)
    fq_terms, fq_rest = _parse_query(_str(params, "fq"), "fq")
    q_terms, q_text = _parse_query(_str(params, "q"), "q")
    if fq_rest:
        raise invalid("fq", "fq takes field:value terms only.")
    order = _parse_sort(_str(params, "sort"))
    facet_fields = _list(params, "facet.field")
    for f in facet_fields:
        if f not in FACET_FIELDS:
            raise invalid(
                "facet.field", "Cannot facet by {name}; use {names}.", name=f, names=", ".join(FACET_FIELDS)
            )
    facet_limit = _int(params, "facet.limit", 50, -1, 10_000)
    facet_mincount = _int(params, "facet.mincount", 1, 0, 10**9)

    datasets = visible_datasets(ctx.session, ctx.caller)
    orgs = _orgs(ctx.session, {d.owner_org_id for d in datasets})
    scores: dict[int, float] = {d.id: 1.0 for d in datasets}
    if q_text:
        index = search.index_for(ctx.session)
        terms = search.tokens(q_text) or [q_text.lower()]
        scores = search.score(index, terms, set(scores))
    chosen: list[tuple[Dataset, float]] = []
    for d in datasets:
        if d.id not in scores:
            continue
        org = orgs[d.owner_org_id]
        if all(_term_matches(d, org, n, v) != neg for neg, n, v in fq_terms + q_terms):
            chosen.append((d, scores[d.id]))
    for name, desc in reversed(order):
        chosen.sort(key=lambda ds: _SORTS[name](ds[0], ds[1]), reverse=desc)

    facets: dict[str, dict[str, int]] = {}
    search_facets: dict[str, Any] = {}
    for f in facet_fields:
        counts: Counter[str] = Counter()
        labels: dict[str, str] = {}
        for d, _s in chosen:
            org = orgs[d.owner_org_id]
            match FACET_FIELDS[f]:
                case "organization":
                    counts[org.code] += 1
                    labels[org.code] = org.name
                case "tags":
                    counts.update(dict.fromkeys(_tags(d), 1))
                case "res_format":
                    counts["JSON"] += 1
                case "license_id":
                    counts["notspecified"] += 1
                case other:
                    counts[str(getattr(d, other))] += 1
        items = [(v, c) for v, c in counts.most_common() if c >= facet_mincount]
        if facet_limit >= 0:
            items = items[:facet_limit]
        facets[f] = dict(items)
        search_facets[f] = {
            "title": f,
            "items": [{"name": v, "display_name": labels.get(v, v), "count": c} for v, c in items],
        }
    page = chosen[start : start + rows]
    return {
        "count": len(chosen),
        "sort": ", ".join(f"{n} {'desc' if d else 'asc'}" for n, d in order),
        "facets": facets,
        "search_facets": search_facets,
        "results": [package_dict(d, orgs[d.owner_org_id], ctx.base_url) for d, _s in page],
    }


def organization_list(ctx: Context, params: Mapping[str, Any]) -> list[Any]:
    """Organizations that own datasets the caller may see (CKAN lists only those with packages
    here, so the list never shows who holds closed data)."""
    all_fields = _bool(params, "all_fields", False)
    limit = _int(params, "limit", 0, 0, 100_000)
    offset = _int(params, "offset", 0, 0, 10**9)
    sort = _str(params, "sort") or "name asc"
    counts = Counter(d.owner_org_id for d in visible_datasets(ctx.session, ctx.caller))
    orgs = list(_orgs(ctx.session, set(counts)).values())
    key, _sp, direction = sort.partition(" ")
    if key not in ("name", "title", "package_count") or direction.strip() not in ("", "asc", "desc"):
        raise invalid("sort", "Cannot sort organizations by {sort}.", sort=sort)
    keyfn: dict[str, Callable[[Org], Any]] = {
        "name": lambda o: o.code,
        "title": lambda o: o.name,
        "package_count": lambda o: counts[o.id],
    }
    orgs.sort(key=keyfn[key], reverse=direction.strip() == "desc")
    orgs = orgs[offset : offset + limit] if limit else orgs[offset:]
    if all_fields:
        return [org_dict(o, counts[o.id]) for o in orgs]
    return [o.code for o in orgs]


def organization_show(ctx: Context, params: Mapping[str, Any]) -> dict[str, Any]:
    ident = _str(params, "id")
    if not ident:
        raise invalid("id", "Missing value: {name}.", name="id")
    include = _bool(params, "include_datasets", False)
    datasets = visible_datasets(ctx.session, ctx.caller)
    orgs = _orgs(ctx.session, {d.owner_org_id for d in datasets})
    for o in orgs.values():
        if ident in (o.code, org_id(o.code)):
            own = [d for d in datasets if d.owner_org_id == o.id]
            out = org_dict(o, len(own))
            if include:
                out["packages"] = [package_dict(d, o, ctx.base_url) for d in own[:1000]]
            out["users"] = []
            out["extras"] = []
            return out
    raise not_found("No organization {id} that you may see.", id=ident)


def tag_list(ctx: Context, params: Mapping[str, Any]) -> list[Any]:
    query = _str(params, "query") or _str(params, "q")
    all_fields = _bool(params, "all_fields", False)
    if _str(params, "vocabulary_id"):
        return []  # no tag vocabularies here
    tags = sorted({t for d in visible_datasets(ctx.session, ctx.caller) for t in _tags(d)})
    if query:
        tags = [t for t in tags if query.lower() in t.lower()]
    if all_fields:
        return [
            {
                "id": str(uuid.uuid5(NAMESPACE, f"tag:{t}")),
                "name": t,
                "display_name": t,
                "vocabulary_id": None,
            }
            for t in tags
        ]
    return tags


def datastore_search(ctx: Context, params: Mapping[str, Any]) -> dict[str, Any]:
    """Rows of a dataset's datastore resource through the engine, under the caller's policy:
    masked as the grant says, its row filter applied; metered (channel "ckan") and audited."""
    from civicgrid.data import access

    ident = _str(params, "resource_id") or _str(params, "id")
    ds = _find_dataset(ctx.session, ctx.caller, ident, field="resource_id")
    limit = _int(params, "limit", DEFAULT_LIMIT, 0, min(MAX_LIMIT, access.MAX_LIMIT))
    offset = _int(params, "offset", 0, 0, 10**9)
    include_total = _bool(params, "include_total", True)
    fields = _list(params, "fields")
    filters_raw = params.get("filters")
    if isinstance(filters_raw, str) and filters_raw.strip():
        try:
            filters_raw = json.loads(filters_raw)
        except ValueError:
            raise invalid("filters", "filters is not valid JSON.") from None
    if filters_raw not in (None, "") and not isinstance(filters_raw, dict):
        raise invalid("filters", "filters must be a JSON object of field: value.")
    sort = _parse_row_sort(_str(params, "sort"))
    q = params.get("q")
    if isinstance(q, dict):
        raise invalid("q", "q by field is not supported; use filters.")
    try:
        page = access.read_rows(
            ctx.session,
            actor=ctx.caller.actor,
            key=ctx.caller.key,
            dataset=ds,
            fields=fields,
            filters=filters_raw or None,
            sort=sort,
            q=str(q or "").strip(),
            limit=limit,
            offset=offset,
            include_total=include_total,
            channel="ckan",
        )
    except AppError as exc:
        raise from_app_error(exc) from exc
    rid = resource_id(ds.name)
    base = f"/api/3/action/datastore_search?resource_id={rid}"
    out: dict[str, Any] = {
        "resource_id": rid,
        "fields": [{"id": n, "type": _ckan_type(t)} for n, t in page.fields],
        "records": page.records,
        "limit": limit,
        "offset": offset,
        "sort": ", ".join(f"{n} {'desc' if d else 'asc'}" for n, d in sort) or None,
        "_links": {
            "start": base,
            "next": f"{base}&offset={offset + limit}" + (f"&limit={limit}" if limit != DEFAULT_LIMIT else ""),
        },
    }
    if page.total is not None:
        out["total"] = page.total
        out["total_was_estimated"] = False
    if fields:
        out["fields_requested"] = fields
    if filters_raw:
        out["filters"] = filters_raw
    if q:
        out["q"] = q
    return out


def _parse_row_sort(text: str) -> list[tuple[str, bool]]:
    out = []
    for part in (text or "").split(","):
        bits = part.split()
        if not bits:
            continue
        if len(bits) > 2 or (len(bits) == 2 and bits[1].lower() not in ("asc", "desc")):
            raise invalid("sort", "Cannot sort by {sort}; write field asc or field desc.", sort=part.strip())
        out.append((bits[0].strip('"'), len(bits) == 2 and bits[1].lower() == "desc"))
    return out


def help_show(ctx: Context, params: Mapping[str, Any]) -> str:
    name = _str(params, "name")
    fn = ACTIONS.get(name)
    if fn is None:
        raise not_found("Action name not known: {name}", name=name)
    return (fn.__doc__ or name).strip()


ACTIONS: dict[str, Callable[[Context, Mapping[str, Any]], Any]] = {
    "status_show": status_show,
    "package_list": package_list,
    "package_search": package_search,
    "package_show": package_show,
    "organization_list": organization_list,
    "organization_show": organization_show,
    "tag_list": tag_list,
    "datastore_search": datastore_search,
    "help_show": help_show,
}


def call(session: Session, caller: Caller, base_url: str, action: str, params: Mapping[str, Any]) -> Any:
    fn = ACTIONS.get(action)
    if fn is None:
        raise CkanError(NOT_FOUND, "Action name not known: {name}", 400, name=action)
    return fn(Context(session, caller, base_url), params)
