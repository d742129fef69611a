"""Open311 GeoReport v2 in CivicGrid's words: services are the catalogue's active sub-categories,
a service request is an `Event` (its number is the service_request_id), and our workflow states
fold into the spec's open/closed."""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from typing import Any, Literal

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from civicgrid.accounts import service as accounts
from civicgrid.accounts.permissions import Permission
from civicgrid.core.auth import SYSTEM, Actor
from civicgrid.core.db import utcnow
from civicgrid.core.errors import Invalid, NotFound, PermissionDenied
from civicgrid.core.i18n import get_locale, gettext
from civicgrid.core.masking import mask_id_number, mask_phone
from civicgrid.core.vocab import PLATFORM_LABELS
from civicgrid.events import service as events
from civicgrid.events.models import Category, Channel, Event, HandleUnit, State, TimelineEntry
from civicgrid.events.open311.schemas import (
    Attribute,
    AttributeValue,
    Discovery,
    Endpoint,
    RequestCreated,
    RequestToken,
    Service,
    ServiceDefinition,
    ServiceRequest,
)
from civicgrid.regions import service as regions

P = Permission
CST = timezone(timedelta(hours=8), "CST")  # all datetimes go out in China Standard Time
CHANGESET = "2026-11-25T00:00:00+08:00"  # when this API last changed (discovery)
SPAN = timedelta(days=90)  # the spec's default and largest date range of GET requests
MAX_ROWS = 1000  # the spec's largest answer of GET requests
INTAKE_ACTION = "open311"  # the timeline entry that keeps a request's attributes and media_url

OPEN_STATES = frozenset(
    {
        State.reported,
        State.accepted,
        State.dispatched,
        State.handling,
        State.handled,
        State.verified,
        State.suspended,
    }
)
CLOSED_STATES = frozenset(State) - OPEN_STATES  # rejected, merged, closed, rated, archived
# Steps whose note tells the public what happened (internal hand-backs and escalations do not).
NOTE_ACTIONS = ("reject", "handle", "close", "suspend", "resume")


def N_(message: str) -> str:
    """Marks a msgid for extraction; it is translated where it is shown."""
    return message


# ---- formats ----------------------------------------------------------------------------

_W3C = re.compile(r"^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?$")


def w3c(at: datetime | None) -> str | None:
    """2026-11-25T09:30:00+08:00."""
    return at.astimezone(CST).isoformat(timespec="seconds") if at else None


def parse_w3c(text: str, name: str) -> datetime:
    """A W3C date-time (a date alone means its start; no offset means China Standard Time)."""
    text = text.strip()
    if not _W3C.match(text):
        raise Invalid(
            "{name} must be a W3C date and time, e.g. 2026-11-25T08:30:00+08:00.", name=name, field=name
        )
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), time(), CST)
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise Invalid(
            "{name} must be a W3C date and time, e.g. 2026-11-25T08:30:00+08:00.", name=name, field=name
        ) from None
    return at if at.tzinfo else at.replace(tzinfo=CST)


_ID_IN_TEXT = re.compile(r"(?<![0-9])[0-9]{17}[0-9Xx](?![0-9A-Za-z])")
_MOBILE_IN_TEXT = re.compile(r"(?<![0-9])1[3-9][0-9]{9}(?![0-9])")


def mask_text(text: str | None) -> str | None:
    """Free text for the public: ID numbers and mobile numbers typed into it are masked.
    Names cannot be found reliably in free text and stay as written."""
    if not text:
        return text
    text = _ID_IN_TEXT.sub(lambda m: mask_id_number(m.group()), text)
    return _MOBILE_IN_TEXT.sub(lambda m: mask_phone(m.group()), text)


# ---- keys and jurisdiction --------------------------------------------------------------


def check_jurisdiction(session: Session, jurisdiction_id: str | None) -> None:
    """`jurisdiction_id` is optional; when given it must name our city (its code or its name)."""
    if jurisdiction_id is None:
        return
    wanted = jurisdiction_id.strip()
    for root in regions.children(session, SYSTEM):
        if wanted in (root.code, root.name) or (root.name_en and wanted.lower() == root.name_en.lower()):
            return
    raise NotFound("Unknown jurisdiction_id {jurisdiction}.", jurisdiction=wanted)


def reader_for_key(session: Session, api_key: str | None) -> Actor | None:
    """The reader behind an optional api_key; a key that is given must be valid."""
    if not api_key:
        return None
    actor = accounts.actor_for_api_token(session, api_key.strip())
    if actor is None:
        raise PermissionDenied("The api_key is invalid, expired or revoked.")
    return actor


def reporter_for_key(session: Session, api_key: str | None) -> Actor:
    """Creating a request needs a personal access token of a role that may report events."""
    if not api_key:
        raise PermissionDenied("An api_key is required to create a service request.")
    actor = reader_for_key(session, api_key)
    if actor is None or not actor.can(P.events_report):
        raise PermissionDenied("This api_key may not create service requests.")
    return actor


# ---- services ---------------------------------------------------------------------------


def _name(c: Category) -> str:
    return c.name_en if get_locale() == "en" and c.name_en else c.name


def service_notice(rules: dict[str, Any]) -> str:
    amount = rules["handle_amount"]
    n = int(amount) if float(amount).is_integer() else amount
    if rules["handle_unit"] == HandleUnit.hours:
        return gettext("Handled within {n} working hours after dispatch.", n=n)
    return gettext("Handled within {n} working days after dispatch.", n=n)


def _services(session: Session) -> tuple[list[Category], dict[int, Category]]:
    """Active sub-categories (the services) and every category by id (for group names)."""
    every = events.list_categories(session, include_inactive=True)
    by_id = {c.id: c for c in every}
    return [c for c in every if c.parent_id is not None and c.active], by_id


def list_services(session: Session) -> list[Service]:
    services, by_id = _services(session)
    out = []
    for c in services:
        group = _name(by_id[c.parent_id]) if c.parent_id in by_id else ""
        platform = gettext(PLATFORM_LABELS[c.platform])
        out.append(
            Service(
                service_code=c.code,
                service_name=_name(c),
                description=gettext(
                    "{group}: {name}. Goes to the {platform} platform. {notice}",
                    group=group,
                    name=_name(c),
                    platform=platform,
                    notice=service_notice(events.rules_of(c)),
                ),
                metadata=True,  # every service offers attributes (see service_definition)
                type="realtime",
                keywords=", ".join(k for k in (group, platform, c.name, c.name_en) if k),
                group=group,
            )
        )
    return out


def get_service(
    session: Session, code: str, *, missing: type[Invalid] | type[NotFound] = NotFound
) -> Category:
    services, _by_id = _services(session)
    for c in services:
        if c.code == code:
            return c
    raise missing("Unknown service_code {code}.", code=code, field="service_code")


SEVERITY = (
    ("low", N_("Minor")),
    ("medium", N_("Serious")),
    ("high", N_("Urgent: a danger to people or property")),
)
WHEN = (
    ("morning", N_("Morning")),
    ("daytime", N_("Daytime")),
    ("evening", N_("Evening")),
    ("night", N_("Night")),
)
YES_NO = (("yes", N_("Yes")), ("no", N_("No")))


def _values(pairs: tuple[tuple[str, str], ...]) -> list[AttributeValue]:
    return [AttributeValue(key=k, name=gettext(v)) for k, v in pairs]


def attributes_for(category: Category) -> list[Attribute]:
    """A small, honest set: what a dispatcher can use when accepting and routing a report."""
    attrs = [
        Attribute(
            variable=False,
            code="deadline",
            datatype="string",
            order=1,
            description=service_notice(events.rules_of(category)),
        ),
        Attribute(
            code="severity_hint",
            datatype="singlevaluelist",
            order=2,
            description=gettext("How serious does it look?"),
            values=_values(SEVERITY),
        ),
        Attribute(
            code="when_seen",
            datatype="multivaluelist",
            order=3,
            description=gettext("When does it happen? Choose all that apply."),
            values=_values(WHEN),
        ),
        Attribute(
            code="first_seen",
            datatype="datetime",
            order=4,
            description=gettext("When did you first notice it?"),
            datatype_description=gettext("W3C date and time, e.g. 2026-11-25T08:30:00+08:00"),
        ),
        Attribute(
            code="callback",
            datatype="singlevaluelist",
            order=5,
            description=gettext("May the office call you back about it?"),
            values=_values(YES_NO),
        ),
    ]
    if category.is_dispute:
        attrs.append(
            Attribute(
                code="parties",
                datatype="number",
                required=True,
                order=6,
                description=gettext("How many parties are involved?"),
                datatype_description=gettext("A whole number, 2 or more."),
            )
        )
    return attrs


def service_definition(session: Session, code: str) -> ServiceDefinition:
    return ServiceDefinition(service_code=code, attributes=attributes_for(get_service(session, code)))


def check_attributes(category: Category, given: dict[str, list[str]]) -> dict[str, Any]:
    """The attribute[...] values of a request, checked against the service definition."""
    defs = {a.code: a for a in attributes_for(category) if a.variable}
    for code in given:
        if code not in defs:
            raise Invalid("Unknown attribute {code} for service {service}.", code=code, service=category.code)
    out: dict[str, Any] = {}
    for code, a in defs.items():
        values = [v.strip() for v in given.get(code, []) if v.strip()]
        if not values:
            if a.required:
                raise Invalid("The attribute {code} is required.", code=code)
            continue
        if a.datatype != "multivaluelist" and len(values) > 1:
            raise Invalid("The attribute {code} takes one value.", code=code)
        keys = [v.key for v in a.values]
        if a.datatype in ("singlevaluelist", "multivaluelist"):
            bad = [v for v in values if v not in keys]
            if bad:
                raise Invalid(
                    "{value} is not a value of the attribute {code}; use one of {keys}.",
                    value=bad[0],
                    code=code,
                    keys=", ".join(keys),
                )
            out[code] = values if a.datatype == "multivaluelist" else values[0]
        elif a.datatype == "number":
            out[code] = _number(code, values[0])
        elif a.datatype == "datetime":
            out[code] = w3c(parse_w3c(values[0], f"attribute[{code}]"))
        else:
            out[code] = values[0][:1000]
    return out


def _number(code: str, text: str) -> float | int:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if code == "parties" and not (value >= 2 and value.is_integer()):
        raise Invalid("The attribute {code} must be a whole number, 2 or more.", code=code)
    if value != value:  # NaN: not a number at all
        raise Invalid("The attribute {code} must be a number.", code=code)
    return int(value) if value.is_integer() else value


# ---- creating requests ------------------------------------------------------------------


@dataclass
class RequestForm:
    """The fields of POST requests (all text, as they arrive in the form)."""

    service_code: str = ""
    lat: str = ""
    long: str = ""
    address_string: str = ""
    address_id: str = ""
    email: str = ""
    device_id: str = ""
    account_id: str = ""
    first_name: str = ""
    last_name: str = ""
    phone: str = ""
    description: str = ""
    media_url: str = ""
    attributes: dict[str, list[str]] = field(default_factory=dict)


def _coordinate(text: str, name: str, limit: float) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not -limit <= value <= limit:
        raise Invalid("{name} must be a number between -{limit} and {limit}.", name=name, limit=int(limit))
    return value


def _location(form: RequestForm) -> tuple[float, float]:
    if form.lat.strip() or form.long.strip():
        return _coordinate(form.lat, "lat", 90), _coordinate(form.long, "long", 180)
    if form.address_string.strip():
        raise Invalid(
            "This server cannot look up addresses: send lat and long with the address_string.",
            error_code="no_geocoder",
        )
    raise Invalid("A location is required: send lat and long.", error_code="no_location")


def reporter_name(first: str, last: str) -> str:
    """Chinese names are family name first, without a space (张 + 三 → 张三)."""
    first, last = first.strip(), last.strip()
    if re.search(r"[\u4e00-\u9fff]", first + last):
        return f"{last}{first}"
    return f"{first} {last}".strip()


def _summary(attrs: dict[str, Any], media_url: str) -> str:
    parts = [f"{k}: {', '.join(v) if isinstance(v, list) else v}" for k, v in attrs.items()]
    if media_url:
        parts.append(f"media_url: {media_url}")
    return "; ".join(parts)


def create_request(session: Session, actor: Actor, form: RequestForm) -> RequestCreated:
    """POST requests: check everything first (nothing is written on a refusal), then create the
    event through the one intake function and keep the Open311 extras in a timeline entry."""
    code = form.service_code.strip()
    if not code:
        raise Invalid("service_code is required.", field="service_code")
    category = get_service(session, code, missing=Invalid)
    lat, lon = _location(form)
    attrs = check_attributes(category, form.attributes)
    media_url = form.media_url.strip()
    if media_url and (not re.match(r"^https?://\S+$", media_url) or len(media_url) > 500):
        raise Invalid("media_url must be an http or https address of at most 500 characters.")
    name = reporter_name(form.first_name, form.last_name)
    phone = form.phone.strip()
    if len(name) > 100 or len(phone) > 32:
        raise Invalid("The name or phone number is too long.")
    event = events.create_event(
        session,
        actor,
        category_code=category.code,
        lon=lon,
        lat=lat,
        # The spec makes the description optional; the service's name then says what is wrong.
        description=form.description.strip() or category.name,
        address=form.address_string.strip()[:300],
        reporter_name=name,
        reporter_phone=phone,
        channel=Channel.open311,
        external_id=secrets.token_urlsafe(12),  # the request's token (GET tokens/{token})
    )
    data: dict[str, Any] = {"attributes": attrs}
    extras = {
        "media_url": media_url,
        "address_id": form.address_id.strip()[:64],
        "device_id": form.device_id.strip()[:64],
        "account_id": form.account_id.strip()[:64],
    }
    data.update({k: v for k, v in extras.items() if v})
    events.append_timeline(
        session,
        event,
        actor,
        INTAKE_ACTION,
        State.reported,
        State.reported,
        note=_summary(attrs, media_url),
        data=data,
    )
    return RequestCreated(
        service_request_id=event.number,
        service_notice=service_notice(json.loads(event.rules)),
        account_id=form.account_id.strip() or None,
    )


# ---- reading requests -------------------------------------------------------------------


def public_category_ids(session: Session) -> set[int]:
    """Categories whose requests anyone may read: matters about a place. Disputes and matters
    about a person (the catalogue gives those no duplicate radius: enquiries, petitions,
    persons under attention) are shown only to readers who may see the event itself."""
    return {
        c.id
        for c in events.list_categories(session, include_inactive=True)
        if not c.is_dispute and c.dup_radius_m > 0
    }


def _readable_stmt(session: Session, reader: Actor | None) -> Any:
    public = Event.category_id.in_(public_category_ids(session))
    stmt = select(Event)
    if reader is None:
        return stmt.where(public)
    mine = Event.id.in_(events.visible_stmt(reader).with_only_columns(Event.id))
    return stmt.where(or_(public, mine))


def _clear_ids(session: Session, reader: Actor | None, ids: list[int]) -> set[int]:
    """Events whose text the reader sees unmasked: those CivicGrid itself would show them."""
    if reader is None or not ids:
        return set()
    stmt = events.visible_stmt(reader).with_only_columns(Event.id).where(Event.id.in_(ids))
    return set(session.scalars(stmt))


def _split(text: str | None) -> list[str]:
    return [p.strip() for p in (text or "").split(",") if p.strip()]


def list_requests(
    session: Session,
    reader: Actor | None,
    *,
    service_request_id: str | None = None,
    service_code: str | None = None,
    start_date: str | None = None,
    end_date: str | None = None,
    status: str | None = None,
    now: datetime | None = None,
) -> list[ServiceRequest]:
    """GET requests: newest first, at most 1000, within 90 days unless ids are asked for."""
    stmt = _readable_stmt(session, reader)
    ids = _split(service_request_id)
    if ids:
        # The spec: service_request_id overrides every other argument.
        stmt = stmt.where(Event.number.in_(ids[:MAX_ROWS]))
    else:
        codes = _split(service_code)
        if codes:
            services, _by_id = _services(session)
            known = {c.code: c.id for c in services}
            unknown = [c for c in codes if c not in known]
            if unknown:
                raise Invalid("Unknown service_code {code}.", code=unknown[0], field="service_code")
            stmt = stmt.where(Event.category_id.in_([known[c] for c in codes]))
        statuses = set(_split(status))
        if statuses - {"open", "closed"}:
            raise Invalid("status must be open or closed (or both, comma-separated).", field="status")
        if statuses == {"open"}:
            stmt = stmt.where(Event.state.in_(OPEN_STATES))
        elif statuses == {"closed"}:
            stmt = stmt.where(Event.state.in_(CLOSED_STATES))
        start, end = _range(start_date, end_date, now or utcnow())
        stmt = stmt.where(Event.reported_at >= start, Event.reported_at <= end)
    rows = list(session.scalars(stmt.order_by(Event.reported_at.desc(), Event.id.desc()).limit(MAX_ROWS)))
    return _requests_out(session, reader, rows)


def _range(start_date: str | None, end_date: str | None, now: datetime) -> tuple[datetime, datetime]:
    start = parse_w3c(start_date, "start_date") if start_date else None
    end = parse_w3c(end_date, "end_date") if end_date else None
    if start and end:
        if end < start:
            raise Invalid("end_date is before start_date.", field="end_date")
        if end - start > SPAN:
            raise Invalid("start_date and end_date may not span more than 90 days.", field="end_date")
        return start, end
    if start:
        return start, start + SPAN
    end = end or now
    return end - SPAN, end


def get_request(session: Session, reader: Actor | None, number: str) -> list[ServiceRequest]:
    event = session.scalar(_readable_stmt(session, reader).where(Event.number == number.strip()))
    if event is None:
        raise NotFound("No service request {number}.", number=number)
    return _requests_out(session, reader, [event])


def request_for_token(session: Session, token: str) -> list[RequestToken]:
    event = events.find_by_external_id(session, Channel.open311, token.strip())
    if event is None:
        raise NotFound("No service request has the token {token}.", token=token)
    return [RequestToken(service_request_id=event.number, token=token.strip())]


def status_of(state: State) -> Literal["open", "closed"]:
    return "open" if state in OPEN_STATES else "closed"


def _requests_out(session: Session, reader: Actor | None, rows: list[Event]) -> list[ServiceRequest]:
    if not rows:
        return []
    ids = [e.id for e in rows]
    clear = _clear_ids(session, reader, ids)
    categories = {c.id: c for c in events.list_categories(session, include_inactive=True)}
    notes: dict[int, str] = {}
    intake: dict[int, dict[str, Any]] = {}  # what an Open311 client sent beyond the event
    entries = session.execute(
        select(TimelineEntry.event_id, TimelineEntry.action, TimelineEntry.note, TimelineEntry.data)
        .where(TimelineEntry.event_id.in_(ids), TimelineEntry.action.in_((*NOTE_ACTIONS, INTAKE_ACTION)))
        .order_by(TimelineEntry.event_id, TimelineEntry.seq)
    )
    for event_id, action, note, data in entries:
        if action == INTAKE_ACTION:
            intake[event_id] = json.loads(data or "{}")
        elif note:
            notes[event_id] = note  # the latest public note wins
    org_names: dict[int, str] = {}
    out = []
    for e in rows:
        c = categories[e.category_id]
        org_id = e.lead_org_id or e.owner_org_id
        if org_id not in org_names:
            org_names[org_id] = accounts.get_org(session, org_id).name
        shown = (lambda t: t) if e.id in clear else mask_text
        out.append(
            ServiceRequest(
                service_request_id=e.number,
                status=status_of(e.state),
                status_notes=shown(_status_notes(session, e, notes.get(e.id))),
                service_name=_name(c),
                service_code=c.code,
                description=shown(e.description),
                agency_responsible=org_names[org_id],
                service_notice=service_notice(json.loads(e.rules)),
                requested_datetime=w3c(e.reported_at) or "",
                updated_datetime=w3c(e.updated_at),
                expected_datetime=w3c(e.handle_due_at),
                address=e.address or None,
                lat=e.lat,
                long=e.lon,
                address_id=intake.get(e.id, {}).get("address_id") or None,
                media_url=intake.get(e.id, {}).get("media_url") or None,
            )
        )
    return out


def _status_notes(session: Session, e: Event, note: str | None) -> str | None:
    if e.state == State.rejected:
        text = e.reject_reason
        if e.redirect_to:
            text += " " + gettext("Please turn to: {where}", where=e.redirect_to)
        return text
    if e.state == State.merged:
        return gettext(
            "Merged with request {number} about the same matter.",
            number=events.event_number(session, e.merged_into_id),
        )
    return note or None


# ---- discovery --------------------------------------------------------------------------


def discovery(base_url: str) -> Discovery:
    base = base_url.rstrip("/")
    return Discovery(
        changeset=CHANGESET,
        contact=gettext("Ask the city's big-data bureau (the CivicGrid administrators) for help."),
        key_service=gettext(
            "Log in and create a personal access token at {url}; use it as api_key.", url=f"{base}/account"
        ),
        endpoints=[Endpoint(url=f"{base}/open311/v2", changeset=CHANGESET)],
    )
