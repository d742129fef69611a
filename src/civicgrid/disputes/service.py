"""Rules of mediation cases: intake at one window, triage to a level, mediators, level moves,
rounds, agreement or failure and referral, parties' confirmations, follow-up calls and reopening.

The state machine uses the shared mechanism of `core/workflow.py` (as events do): `FLOW` is
the single source of legal moves, every step is one `do_*` function that checks the reader's
relation to the case and the state, changes the case, appends an immutable timeline entry and
audits — all in the caller's transaction.

    registered ─triage→ triaged ─assign→ mediating ─agree→ agreed ─follow_up(last, performed)→ closed
         │                 ↑ move_up/move_down ┘  │   └ follow_up(breached) → mediating (reopened)
         └── withdraw ─────┴───────────────────   └─fail→ failed ─refer→ referred ─accept_referral→ done
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import Select, func, literal, or_, select
from sqlalchemy.orm import Session

from civicgrid.accounts import service as accounts
from civicgrid.accounts.models import Membership, Org, OrgKind, User
from civicgrid.accounts.permissions import Permission, Role, permissions_for
from civicgrid.core import audit
from civicgrid.core.auth import Actor
from civicgrid.core.calendar import WorkCalendar, default_calendar
from civicgrid.core.db import utcnow
from civicgrid.core.errors import Conflict, Invalid, NotFound, PermissionDenied
from civicgrid.core.i18n import gettext
from civicgrid.core.masking import mask_id_number, mask_phone
from civicgrid.core.workflow import Workflow, append_entry, required_text
from civicgrid.disputes.models import (
    Complexity,
    Dispute,
    DisputeType,
    FollowUp,
    FollowUpKind,
    Level,
    Mediator,
    Outcome,
    Party,
    PartyKind,
    PartyRole,
    Performance,
    ReferralTarget,
    ReferringBody,
    Risk,
    Round,
    RoundOutcome,
    Satisfaction,
    Source,
    State,
    TimelineEntry,
)
from civicgrid.events import service as events
from civicgrid.events.models import OPEN_STATES as EVENT_OPEN_STATES
from civicgrid.regions import service as regions
from civicgrid.regions.models import Region, RegionLevel

log = logging.getLogger("civicgrid.disputes")
P = Permission
S = State


def N_(message: str) -> str:
    """Marks a msgid for extraction; translated where it is shown."""
    return message


# ---- vocabulary (English msgids, translated where shown) ---------------------------------

TYPE_LABELS = {
    DisputeType.neighbour: N_("Neighbour dispute"),
    DisputeType.family: N_("Marriage and family dispute"),
    DisputeType.land: N_("Land and forest dispute"),
    DisputeType.labour: N_("Labour dispute"),
    DisputeType.property: N_("Property management dispute"),
    DisputeType.medical: N_("Medical dispute"),
    DisputeType.traffic: N_("Traffic accident dispute"),
    DisputeType.consumer: N_("Consumer dispute"),
    DisputeType.requisition: N_("Land requisition and demolition dispute"),
    DisputeType.debt: N_("Contract and debt dispute"),
    DisputeType.other: N_("Other dispute"),
}
# The event catalogue's dispute categories (矛盾纠纷 10xx) and the type each becomes.
CATEGORY_TYPES = {
    "1001": DisputeType.neighbour,
    "1002": DisputeType.family,
    "1003": DisputeType.land,
    "1004": DisputeType.labour,
    "1005": DisputeType.property,
    "1006": DisputeType.medical,
    "1007": DisputeType.traffic,
    "1008": DisputeType.consumer,
    "1009": DisputeType.requisition,
    "1010": DisputeType.debt,
}
STATE_LABELS = {
    S.registered: N_("Registered"),
    S.triaged: N_("Triaged"),
    S.mediating: N_("Mediating"),
    S.agreed: N_("Agreement reached"),
    S.failed: N_("Mediation failed"),
    S.referred: N_("Referred"),
    S.transferred: N_("Referral accepted"),
    S.closed: N_("Closed"),
    S.withdrawn: N_("Withdrawn"),
}
SOURCE_LABELS = {
    Source.event: N_("From an event"),
    Source.walk_in: N_("Walk-in visit"),
    Source.hotline: N_("Hotline call"),
    Source.referral: N_("Referral"),
}
REFERRING_LABELS = {
    ReferringBody.court: N_("Court"),
    ReferringBody.police: N_("Police"),
    ReferringBody.petition: N_("Petition office"),
    ReferringBody.prosecutor: N_("Procuratorate"),
}
TARGET_LABELS = {
    ReferralTarget.court: N_("Court (litigation)"),
    ReferralTarget.arbitration: N_("Arbitration"),
    ReferralTarget.petition: N_("Petition office"),
    ReferralTarget.police: N_("Police"),
}
COMPLEXITY_LABELS = {
    Complexity.simple: N_("Simple (简单)"),
    Complexity.complex: N_("Complex (复杂)"),
    Complexity.difficult: N_("Difficult (疑难)"),
}
LEVEL_LABELS = {
    Level.village: N_("Village mediation committee"),
    Level.township: N_("Township mediation centre"),
    Level.county: N_("County mediation centre"),
}
OUTCOME_LABELS = {
    Outcome.agreement_full: N_("Full agreement"),
    Outcome.agreement_partial: N_("Partial agreement"),
    Outcome.failed: N_("Failed"),
    Outcome.withdrawn: N_("Withdrawn"),
}
ROUND_OUTCOME_LABELS = {
    RoundOutcome.progress: N_("Progress made"),
    RoundOutcome.agreement: N_("Parties agreed"),
    RoundOutcome.no_agreement: N_("No agreement"),
    RoundOutcome.adjourned: N_("Adjourned"),
}
PARTY_ROLE_LABELS = {
    PartyRole.applicant: N_("Applicant"),
    PartyRole.respondent: N_("Respondent"),
    PartyRole.third_party: N_("Third party"),
}
SATISFACTION_LABELS = {
    Satisfaction.satisfied: N_("Satisfied"),
    Satisfaction.basically: N_("Basically satisfied"),
    Satisfaction.dissatisfied: N_("Dissatisfied"),
}
PERFORMANCE_LABELS = {
    Performance.performed: N_("Performed"),
    Performance.performing: N_("Being performed"),
    Performance.breached: N_("Breached"),
}
RISK_LABELS = {Risk.low: N_("Low"), Risk.medium: N_("Medium"), Risk.high: N_("High")}
FIELD_LABELS = {
    "complexity": N_("Complexity"),
    "leader_id": N_("Leader in charge (包案领导)"),
    "mediator_ids": N_("Mediators"),
    "reason": N_("Reason"),
    "note": N_("Note"),
    "held_at": N_("Date and time"),
    "place": N_("Place"),
    "attendees": N_("Attendees"),
    "minutes": N_("Minutes"),
    "outcome": N_("Outcome"),
    "kind": N_("Kind"),
    "facts": N_("Facts and matters in dispute"),
    "terms": N_("Terms agreed"),
    "performance_deadline": N_("Performance deadline"),
    "party_seq": N_("Party"),
    "target": N_("Referred to"),
    "receiving_body": N_("Receiving body"),
    "referred_on": N_("Date of referral"),
    "accepted_on": N_("Date accepted"),
    "satisfaction": N_("Satisfaction"),
    "performance": N_("Performance of the agreement"),
    "name": N_("Name"),
    "title": N_("Title"),
    "type": N_("Type"),
    "referred_by": N_("Referring body"),
    "referred_by_name": N_("Name of the referring body"),
}


def label(field: str) -> str:
    return gettext(FIELD_LABELS.get(field, field))


# Which org kind mediates at each level, and the complexity that puts a case there.
ORG_KIND = {
    Level.village: OrgKind.village_committee,
    Level.township: OrgKind.township_office,
    Level.county: OrgKind.governance_centre,
}
LEVEL_OF_KIND = {kind: level for level, kind in ORG_KIND.items()}
LEVEL_OF_COMPLEXITY = {
    Complexity.simple: Level.village,
    Complexity.complex: Level.township,
    Complexity.difficult: Level.county,
}
COMPLEXITY_OF_LEVEL = {v: k for k, v in LEVEL_OF_COMPLEXITY.items()}
LEVELS = (Level.village, Level.township, Level.county)
# Open = not settled and not handed over: the taking org still answers for these cases
# (first-contact responsibility ends when a referral is accepted). Agreed cases are settled;
# their follow-up calls are tracked on their own.
OPEN_STATES = (S.registered, S.triaged, S.mediating, S.failed, S.referred)
ACCOUNTABLE_STATES = OPEN_STATES
FOLLOW_UP_DAYS = {FollowUpKind.day7: 7, FollowUpKind.day30: 30}

TITLE_MAX = 200
TEXT_MAX = 5000
AMOUNT_MAX = Decimal("1000000000000")  # 1e12 yuan: a typo, not a dispute
_PHONE_RE = re.compile(r"^[0-9+\-() ]{5,20}$")
_ORG_CODE_RE = re.compile(r"^[0-9A-HJ-NPQRTUWXY]{18}$")  # 统一社会信用代码


# ---- the state machine --------------------------------------------------------------------

ALLOWED_FROM: dict[str, tuple[State, ...]] = {
    "triage": (S.registered,),
    "assign": (S.triaged, S.mediating),
    "record_round": (S.mediating,),
    "agree": (S.mediating,),
    "confirm": (S.agreed,),
    "follow_up": (S.agreed,),
    "close": (S.agreed,),
    "fail": (S.mediating,),
    "refer": (S.failed,),
    "accept_referral": (S.referred,),
    "move_up": (S.triaged, S.mediating),
    "move_down": (S.triaged, S.mediating),
    "withdraw": (S.registered, S.triaged, S.mediating),
}
PARAMS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "triage": (("complexity",), ("leader_id", "note")),
    "assign": (("mediator_ids",), ()),
    "record_round": (("held_at", "place", "attendees", "minutes", "outcome"), ()),
    "agree": (("kind", "facts", "terms"), ("performance_deadline",)),
    "confirm": (("party_seq",), ()),
    "follow_up": (("kind", "satisfaction", "performance"), ("note",)),
    "close": ((), ("note",)),
    "fail": (("reason",), ()),
    "refer": (("target", "receiving_body"), ("referred_on",)),
    "accept_referral": ((), ("accepted_on", "note")),
    "move_up": (("reason",), ("leader_id",)),
    "move_down": (("reason",), ()),
    "withdraw": (("reason",), ()),
}
FLOW = Workflow(ALLOWED_FROM, PARAMS)


def params_for(action: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments of a step from a request body; a missing one is a 422 naming it."""
    return FLOW.params_for(action, given, label)


def _illegal(d: Dispute, action: str) -> Invalid:
    return Invalid(
        "Dispute {number} is {state}; this step is not possible now.",
        error_code="illegal_transition",
        number=d.number,
        state=gettext(STATE_LABELS[d.state]),
        action=action,
    )


def _check_state(d: Dispute, action: str) -> None:
    FLOW.check(d.state, action, lambda: _illegal(d, action))


def _need(actor: Actor, permission: Permission) -> None:
    if actor.via == "system" and actor.role == "system":
        return  # the bare system actor (demo loading, CLI) holds no role
    if not actor.can(permission):
        raise PermissionDenied("Your role does not allow this.")


def _office(actor: Actor, d: Dispute) -> None:
    """Case steps belong to the org handling the case (or an administrator in scope)."""
    _need(actor, P.disputes_mediate)
    if actor.role in (Role.admin, "system"):
        return
    if actor.org_id != d.handling_org_id:
        raise PermissionDenied(
            "Only the organisation handling dispute {number} can do this.", number=d.number
        )


def _enum(cls: type[Any], value: Any, field: str) -> Any:
    try:
        return cls(value)
    except ValueError:
        raise Invalid("{what} is not valid.", what=label(field), field=field) from None


def _text(value: str | None, field: str, *, limit: int = TEXT_MAX) -> str:
    text = required_text(value, label(field), field)
    if len(text) > limit:
        raise Invalid("{what} is too long.", what=label(field), field=field)
    return text


def _optional_text(value: str | None, field: str, *, limit: int = TEXT_MAX) -> str:
    text = (value or "").strip()
    if len(text) > limit:
        raise Invalid("{what} is too long.", what=label(field), field=field)
    return text


def _date(value: Any, field: str) -> date | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise Invalid("{what} is not a valid date.", what=label(field), field=field) from None


def _datetime(value: Any, field: str) -> datetime:
    """A moment from the API (aware) or a form (naive local time of the installation)."""
    if isinstance(value, datetime):
        at = value
    else:
        try:
            at = datetime.fromisoformat(str(value))
        except ValueError:
            raise Invalid("{what} is not a valid date and time.", what=label(field), field=field) from None
    if at.tzinfo is None:
        at = at.replace(tzinfo=default_calendar().tz)
    return at.astimezone(UTC)


def _move(
    session: Session,
    actor: Actor,
    d: Dispute,
    action: str,
    to: State,
    *,
    note: str = "",
    data: dict[str, Any] | None = None,
) -> None:
    before = {"state": str(d.state), "version": d.version}
    frm = d.state
    d.state = to
    d.updated_at = utcnow()
    session.flush()  # the version check: a concurrent change raises StaleDataError
    append_entry(session, TimelineEntry, "dispute_id", d.id, actor, action, frm, to, note=note, data=data)
    audit.record(
        session,
        actor,
        f"dispute.{action}",
        "dispute",
        d.number,
        before=before,
        after={"state": str(to), "version": d.version},
        extra=data,
    )


# ---- reading ------------------------------------------------------------------------------


def visible_stmt(actor: Actor) -> Select[Any]:
    """Cases the reader may see: inside their region subtree, or taken by their org (the
    first-contact org keeps sight of a case it took even outside its subtree)."""
    stmt = select(Dispute)
    if actor.via == "system" and actor.role == "system":
        return stmt
    if not actor.can(P.disputes_read):
        return stmt.where(Dispute.id.is_(None))
    return stmt.where(
        or_(Dispute.region_path.startswith(actor.region_path), Dispute.intake_org_id == actor.org_id)
    )


def get_dispute(session: Session, actor: Actor, number: str) -> Dispute:
    d = session.scalar(visible_stmt(actor).where(Dispute.number == number))
    if d is None:
        raise NotFound("No dispute with number {number}.", number=number)
    return d


def dispute_for_event(session: Session, actor: Actor, event_id: int) -> Dispute | None:
    """The case taken from an event, if any and visible (for a link from the event page)."""
    return session.scalar(visible_stmt(actor).where(Dispute.event_id == event_id))


def check_version(d: Dispute, version: int | None) -> None:
    if version is not None and version != d.version:
        raise Conflict(
            "Someone else changed dispute {number} a moment ago. Reload it and try again.", number=d.number
        )


def active_mediators(session: Session, d: Dispute) -> list[Mediator]:
    return list(
        session.scalars(
            select(Mediator)
            .where(Mediator.dispute_id == d.id, Mediator.released_at.is_(None))
            .order_by(Mediator.id)
        )
    )


def rounds(session: Session, d: Dispute) -> list[Round]:
    return list(session.scalars(select(Round).where(Round.dispute_id == d.id).order_by(Round.seq)))


def follow_ups(session: Session, d: Dispute) -> list[FollowUp]:
    return list(
        session.scalars(
            select(FollowUp)
            .where(FollowUp.dispute_id == d.id)
            .order_by(FollowUp.agreement_no, FollowUp.due_on)
        )
    )


def pending_follow_ups(session: Session, d: Dispute) -> list[FollowUp]:
    return [
        f
        for f in follow_ups(session, d)
        if f.agreement_no == d.agreement_no and not f.done_at and not f.cancelled
    ]


def timeline(session: Session, d: Dispute) -> list[TimelineEntry]:
    return list(
        session.scalars(
            select(TimelineEntry).where(TimelineEntry.dispute_id == d.id).order_by(TimelineEntry.seq)
        )
    )


def sees_personal(session: Session, actor: Actor, d: Dispute) -> bool:
    """ID numbers and phones in clear: the right (`disputes.personal`) and a relation to the
    case — its handling or first-contact org, or an assigned mediator. Everyone else reads them
    masked, whatever their rank."""
    if actor.via == "system" and actor.role == "system":
        return True
    if not actor.can(P.disputes_personal):
        return False
    if actor.role == Role.admin or actor.org_id in (d.handling_org_id, d.intake_org_id):
        return True
    return any(m.user_id == actor.user_id for m in active_mediators(session, d))


def party_view(p: Party, clear: bool) -> dict[str, Any]:
    return {
        "seq": p.seq,
        "role": str(p.role),
        "role_label": gettext(PARTY_ROLE_LABELS[p.role]),
        "kind": str(p.kind),
        "name": p.name,
        "id_number": p.id_number if clear or not p.id_number else mask_id_number(p.id_number),
        "phone": p.phone if clear or not p.phone else mask_phone(p.phone),
        "address": p.address if clear or not p.address else gettext("(hidden)"),
        "representative": p.representative,
        "confirmed": p.confirmed_agreement_no is not None and p.confirmed_agreement_no > 0,
        "confirmed_at": p.confirmed_at,
        "confirmed_agreement_no": p.confirmed_agreement_no,
    }


def amount_yuan(d: Dispute) -> str | None:
    if d.amount_cents is None:
        return None
    return f"{Decimal(d.amount_cents) / 100:.2f}"


def _user_name(session: Session, user_id: int | None) -> str | None:
    if not user_id:
        return None
    u = session.get(User, user_id)
    return u.display_name if u else None


def describe(session: Session, actor: Actor, d: Dispute) -> dict[str, Any]:
    """Display fields of a case for this reader (parties masked unless `sees_personal`)."""
    clear = sees_personal(session, actor, d)
    handling = session.get(Org, d.handling_org_id)
    intake = session.get(Org, d.intake_org_id)
    grid = session.get(Region, d.grid_id)
    event_number = events.event_number(session, d.event_id)
    mediators = active_mediators(session, d)
    return {
        "number": d.number,
        "state": str(d.state),
        "state_label": gettext(STATE_LABELS[d.state]),
        "source": str(d.source),
        "source_label": gettext(SOURCE_LABELS[d.source]),
        "event_number": event_number,
        "referred_by": str(d.referred_by) if d.referred_by else None,
        "referred_by_label": gettext(REFERRING_LABELS[d.referred_by]) if d.referred_by else None,
        "referred_by_name": d.referred_by_name,
        "referral_ref": d.referral_ref,
        "type": str(d.type),
        "type_label": gettext(TYPE_LABELS[d.type]),
        "title": d.title,
        "description": d.description,
        "amount": amount_yuan(d),
        "address": d.address,
        "grid_code": grid.code if grid else "",
        "grid_name": grid.name if grid else "",
        "risk": str(d.risk),
        "risk_label": gettext(RISK_LABELS[d.risk]),
        "threat_of_violence": d.threat_of_violence,
        "risk_note": d.risk_note,
        "warning_ref": d.warning_ref or None,
        "complexity": str(d.complexity) if d.complexity else None,
        "complexity_label": gettext(COMPLEXITY_LABELS[d.complexity]) if d.complexity else None,
        "level": str(d.level),
        "level_label": gettext(LEVEL_LABELS[d.level]),
        "handling_org": handling.name if handling else "",
        "intake_org": intake.name if intake else "",
        "accountable_org": (intake.name if intake else "")
        if d.state in ACCOUNTABLE_STATES
        else (handling.name if handling else ""),
        "leader": _user_name(session, d.leader_user_id),
        "mediators": [
            {
                "user_id": m.user_id,
                "name": _user_name(session, m.user_id),
                "lead": m.user_id == d.lead_mediator_id,
            }
            for m in mediators
        ],
        "outcome": str(d.outcome) if d.outcome else None,
        "outcome_label": gettext(OUTCOME_LABELS[d.outcome]) if d.outcome else None,
        "registered_at": d.registered_at,
        "concluded_at": d.concluded_at,
        "closed_at": d.closed_at,
        "duration_days": d.duration_days,
        "resolved_level": str(d.resolved_level) if d.resolved_level else None,
        "level_up_count": d.level_up_count,
        "level_down_count": d.level_down_count,
        "reopen_count": d.reopen_count,
        "agreement_no": d.agreement_no,
        "agreement_facts": d.agreement_facts,
        "agreement_terms": d.agreement_terms,
        "performance_deadline": d.performance_deadline,
        "agreed_at": d.agreed_at,
        "sealed_at": d.sealed_at,
        "seal_ref": d.seal_ref or None,
        "failure_reason": d.failure_reason,
        "referral_target": str(d.referral_target) if d.referral_target else None,
        "referral_target_label": gettext(TARGET_LABELS[d.referral_target]) if d.referral_target else None,
        "referral_body": d.referral_body,
        "referred_on": d.referred_on,
        "referral_accepted_on": d.referral_accepted_on,
        "parties": [party_view(p, clear) for p in d.parties],
        "personal_visible": clear,
        "version": d.version,
    }


# ---- intake at one window -------------------------------------------------------------------


@dataclass
class PartyInput:
    """A party as given at intake (the API's PartyIn and the form both become this)."""

    name: str = ""
    role: str = PartyRole.applicant
    kind: str = PartyKind.person
    id_number: str = ""
    phone: str = ""
    address: str = ""
    representative: str = ""


def _parties(given: Sequence[PartyInput | Mapping[str, Any]]) -> list[Party]:
    """Every party checked before anything is written; the first problem is the answer."""
    if not given:
        raise Invalid("A dispute needs at least one party.", field="parties")
    if len(given) > 50:
        raise Invalid("A dispute has at most 50 parties.", field="parties")
    out = []
    for i, raw in enumerate(given, start=1):
        p = (
            raw
            if isinstance(raw, PartyInput)
            else PartyInput(**{k: v for k, v in raw.items() if v is not None})
        )
        name = (p.name or "").strip()
        if not name:
            raise Invalid("Party {n} has no name.", n=i, field=f"parties.{i - 1}.name")
        if len(name) > 200:
            raise Invalid("The name of party {n} is too long.", n=i, field=f"parties.{i - 1}.name")
        role = _enum(PartyRole, p.role or PartyRole.applicant, "role")
        kind = _enum(PartyKind, p.kind or PartyKind.person, "kind")
        id_number = (p.id_number or "").strip().upper()
        if id_number:
            from civicgrid.data.engine import id_number_valid  # the one GB 11643 check

            ok = (
                id_number_valid(id_number)
                if kind == PartyKind.person
                else bool(_ORG_CODE_RE.match(id_number))
            )
            if not ok:
                raise Invalid(
                    "The ID number of party {n} ({name}) is not valid.",
                    n=i,
                    name=name,
                    field=f"parties.{i - 1}.id_number",
                )
        phone = (p.phone or "").strip()
        if phone and not _PHONE_RE.match(phone):
            raise Invalid(
                "The phone number of party {n} ({name}) is not valid.",
                n=i,
                name=name,
                field=f"parties.{i - 1}.phone",
            )
        out.append(
            Party(
                seq=i,
                role=role,
                kind=kind,
                name=name,
                id_number=id_number,
                phone=phone,
                address=(p.address or "").strip()[:300],
                representative=(p.representative or "").strip()[:100],
            )
        )
    return out


def _amount_cents(amount: Any) -> int | None:
    if amount is None or amount == "":
        return None
    try:
        value = Decimal(str(amount).replace(",", "").strip())
    except InvalidOperation:
        raise Invalid("The amount must be a number of yuan.", field="amount") from None
    if not value.is_finite() or value < 0 or value >= AMOUNT_MAX:
        raise Invalid("The amount must be a number of yuan.", field="amount")
    return int((value * 100).quantize(Decimal(1)))


@dataclass
class Place:
    grid: Region
    village: Region
    township: Region
    county: Region


def _place_of_grid(session: Session, grid: Region) -> Place:
    by_level = {str(r.level): r for r in regions.ancestors(session, grid)}
    return Place(grid, by_level["village"], by_level["township"], by_level["county"])


def _place(
    session: Session, actor: Actor, grid_code: str | None, lon: float | None, lat: float | None
) -> Place:
    if grid_code:
        grid = regions.get_by_code(session, grid_code.strip()) if grid_code.strip() else None
        if grid is None or not _in_scope(actor, grid.path):
            raise NotFound("No region with code {region}.", region=grid_code)
        if grid.level != RegionLevel.grid:
            raise Invalid("Choose the grid where the dispute arose.", field="grid_code")
        return _place_of_grid(session, grid)
    if lon is not None and lat is not None:
        hit = regions.grid_for_point(session, lon, lat)
        if not _in_scope(actor, hit.grid.path):
            raise Invalid("The place lies outside your area.", field="grid_code")
        return _place_of_grid(session, hit.grid)
    raise Invalid("Say where the dispute arose: choose a grid or a point on the map.", field="grid_code")


def intake_grids(session: Session, actor: Actor, limit: int = 1000) -> list[Region]:
    """The grids of the reader's area for the intake form's place picker (at most `limit`)."""
    stmt = (
        select(Region)
        .where(Region.level == RegionLevel.grid, Region.path.startswith(actor.region_path))
        .order_by(Region.code)
        .limit(limit)
    )
    return list(session.scalars(stmt))


def _in_scope(actor: Actor, path: str) -> bool:
    return (actor.via == "system" and actor.role == "system") or actor.in_scope(path)


def _intake_org(session: Session, actor: Actor) -> Org:
    org = session.get(Org, actor.org_id) if actor.org_id else None
    if org is None or org.kind not in LEVEL_OF_KIND:
        raise PermissionDenied(
            "Disputes are registered by a village committee, a township centre or a county centre."
        )
    return org


def register(
    session: Session,
    actor: Actor,
    *,
    source: Source | str,
    type: DisputeType | str | None = None,
    title: str = "",
    description: str = "",
    amount: Any = None,
    address: str = "",
    grid_code: str | None = None,
    lon: float | None = None,
    lat: float | None = None,
    parties: Sequence[PartyInput | Mapping[str, Any]] = (),
    event_number: str | None = None,
    referred_by: ReferringBody | str | None = None,
    referred_by_name: str = "",
    referral_ref: str = "",
    risk: Risk | str = Risk.low,
    threat_of_violence: bool = False,
    risk_note: str = "",
    complexity: Complexity | str | None = None,
    leader_id: int | None = None,
    take: bool = False,
    at: datetime | None = None,
) -> Dispute:
    """Take a case at the one window (一站式受理). Everything is checked before anything is
    written. With `complexity` the case is triaged at once; with `take` the person registering
    becomes its mediator (a township mediator taking a case of their own level)."""
    _need(actor, P.disputes_mediate)
    org = _intake_org(session, actor)
    source = _enum(Source, source, "source")
    event = None
    if source == Source.event:
        if not event_number:
            raise Invalid("Give the number of the event to take the dispute from.", field="event_number")
        event = events.get_event(session, actor, event_number.strip())
        rules = json.loads(event.rules)
        if not rules.get("is_dispute"):
            raise Invalid(
                "Event {number} is not of a dispute category; it cannot become a mediation case.",
                number=event.number,
                field="event_number",
            )
        taken = session.scalar(select(Dispute.number).where(Dispute.event_id == event.id))
        if taken:
            raise Conflict(
                "Event {number} was already taken as dispute {dispute}.", number=event.number, dispute=taken
            )
        grid = regions.get(session, event.grid_id)
        if not _in_scope(actor, grid.path):
            raise NotFound("No event with number {number}.", number=event.number)
        place = _place_of_grid(session, grid)
        category_code = session.scalar(
            select(events.Category.code).where(events.Category.id == event.category_id)
        )
        type = type or CATEGORY_TYPES.get(category_code or "", DisputeType.other)
        title = title or event.title
        address = address or event.address
    else:
        place = _place(session, actor, grid_code, lon, lat)
    if type is None or type == "":
        raise Invalid("{what} is required.", what=label("type"), field="type")
    dtype = _enum(DisputeType, type, "type")
    title = _text(title, "title", limit=TITLE_MAX)
    description = _optional_text(description, "description")
    if source != Source.event and not description:
        raise Invalid("Describe the dispute.", field="description")
    ref_body: ReferringBody | None = None
    if source == Source.referral:
        if not referred_by:
            raise Invalid("{what} is required.", what=label("referred_by"), field="referred_by")
        ref_body = _enum(ReferringBody, referred_by, "referred_by")
        referred_by_name = _text(referred_by_name, "referred_by_name", limit=200)
    else:
        referred_by_name, referral_ref = "", ""
    party_rows = _parties(parties)
    cents = _amount_cents(amount)
    risk_value = _enum(Risk, risk or Risk.low, "risk")
    chosen = _enum(Complexity, complexity, "complexity") if complexity else None
    now = utcnow()
    at = at or now
    level = LEVEL_OF_KIND[org.kind]
    d = Dispute(
        number=events.next_number(session, "TJ" + place.county.code[:6], at),
        source=source,
        event_id=event.id if event else None,
        referred_by=ref_body,
        referred_by_name=referred_by_name.strip(),
        referral_ref=(referral_ref or "").strip()[:100],
        type=dtype,
        title=title,
        description=description,
        amount_cents=cents,
        address=(address or "").strip()[:300],
        grid_id=place.grid.id,
        village_id=place.village.id,
        township_id=place.township.id,
        county_id=place.county.id,
        region_path=place.grid.path,
        risk=risk_value,
        threat_of_violence=bool(threat_of_violence),
        risk_note=_optional_text(risk_note, "risk_note", limit=2000),
        level=level,
        intake_org_id=org.id,
        handling_org_id=org.id,
        state=S.registered,
        registered_at=at,
        registered_day=events.local_date(at),
        parties=party_rows,
    )
    session.add(d)
    session.flush()
    data: dict[str, Any] = {"source": str(source), "level": str(level), "parties": len(party_rows)}
    if event:
        data["event"] = event.number
    if ref_body:
        data["referred_by"] = str(ref_body)
        data["referred_by_name"] = d.referred_by_name
    append_entry(session, TimelineEntry, "dispute_id", d.id, actor, "register", None, S.registered, data=data)
    audit.record(
        session,
        actor,
        "dispute.register",
        "dispute",
        d.number,
        after={"type": str(dtype), "source": str(source), "grid": place.grid.code, "org": org.code},
    )
    if d.threat_of_violence or d.risk == Risk.high:
        _raise_warning(session, actor, d)
    if chosen is not None:
        do_triage(session, actor, d, complexity=chosen, leader_id=leader_id)
    if take and d.state == S.triaged and actor.org_id == d.handling_org_id:
        do_assign(session, actor, d, mediator_ids=[actor.user_id])
    return d


# ---- the risk loop (part B) ---------------------------------------------------------------


def _raise_warning(session: Session, actor: Actor, d: Dispute) -> None:
    """A threat of violence or a high risk of escalation raises a risk warning through the risks
    capability (监测—预警). Until that capability is installed the case keeps its flag, and the
    warning is raised the next time the flag is set with it present."""
    try:
        from civicgrid.risks import service as risks
    except ImportError:
        return
    raise_warning: Callable[..., Any] | None = getattr(risks, "raise_warning", None)
    if raise_warning is None:
        return
    level = "orange" if d.threat_of_violence else "yellow"
    warning = raise_warning(
        session,
        actor=actor,
        source="disputes",
        region_id=d.grid_id,
        level=level,
        title=gettext("Dispute {number}: risk of escalation", number=d.number),
        evidence=[("dispute", d.id)],
    )
    ref = getattr(warning, "number", None) or getattr(warning, "id", None) or ""
    d.warning_ref = str(ref)[:64]
    append_entry(
        session,
        TimelineEntry,
        "dispute_id",
        d.id,
        actor,
        "warn",
        d.state,
        d.state,
        data={"warning": d.warning_ref, "level": level},
    )


# ---- triage, mediators and levels -----------------------------------------------------------


def org_for_level(session: Session, d: Dispute, level: Level) -> Org:
    """The org that mediates at a level for the case's place."""
    region_id = {Level.village: d.village_id, Level.township: d.township_id, Level.county: d.county_id}[level]
    org = accounts.find_org(session, region_id, ORG_KIND[level])
    if org is None:
        region = regions.get(session, region_id)
        raise Invalid(
            "No {level} is set up for {place}.", level=gettext(LEVEL_LABELS[level]), place=region.name
        )
    return org


def _leader(session: Session, d: Dispute, leader_id: Any) -> User:
    """包案领导: an active user holding the leader role in an org of the case's county or above."""
    if leader_id in (None, ""):
        raise Invalid(
            "A difficult case at county level needs a named leader in charge (包案领导).", field="leader_id"
        )
    try:
        uid = int(leader_id)
    except (TypeError, ValueError):
        raise Invalid("{what} is not valid.", what=label("leader_id"), field="leader_id") from None
    for user in leader_candidates(session, d):
        if user.id == uid:
            return user
    raise Invalid("This person cannot be the leader in charge of the case.", field="leader_id")


def leader_candidates(session: Session, d: Dispute) -> list[User]:
    """Active leaders of orgs whose region is the case's county or above it (county, city)."""
    county = regions.get(session, d.county_id)
    stmt = (
        select(User)
        .join(Membership, Membership.user_id == User.id)
        .join(Org, Org.id == Membership.org_id)
        .join(Region, Region.id == Org.region_id)
        .where(
            Membership.role == Role.leader,
            User.active.is_(True),
            Org.active.is_(True),
            func.substr(literal(county.path), 1, func.length(Region.path)) == Region.path,
        )
        .order_by(User.id)
    )
    return list(session.scalars(stmt).unique())


def mediator_candidates(session: Session, org_id: int) -> list[User]:
    """Active members of the org whose role may mediate."""
    roles = [r for r in Role if P.disputes_mediate in permissions_for(r) and r != Role.admin]
    return accounts.org_members(session, org_id, roles)


def _set_level(session: Session, d: Dispute, level: Level, leader_id: Any) -> Org:
    org = org_for_level(session, d, level)
    leader = _leader(session, d, leader_id) if level == Level.county else None
    d.level = level
    d.handling_org_id = org.id
    d.leader_user_id = leader.id if leader else None
    return org


def _release_mediators(session: Session, d: Dispute) -> None:
    now = utcnow()
    for m in active_mediators(session, d):
        m.released_at = now
    d.lead_mediator_id = None


def do_triage(
    session: Session, actor: Actor, d: Dispute, *, complexity: Any, leader_id: Any = None, note: str = ""
) -> Dispute:
    """简单/复杂/疑难 decides the level: village committee, township centre, county centre (with
    a named leader in charge)."""
    _office(actor, d)
    _check_state(d, "triage")
    c = _enum(Complexity, complexity, "complexity")
    frm_level = d.level
    org = _set_level(session, d, LEVEL_OF_COMPLEXITY[c], leader_id)
    d.complexity = c
    _move(
        session,
        actor,
        d,
        "triage",
        S.triaged,
        note=_optional_text(note, "note", limit=2000),
        data={
            "complexity": str(c),
            "from_level": str(frm_level),
            "to_level": str(d.level),
            "to_org": org.code,
            "leader": d.leader_user_id,
        },
    )
    _notify(session, d, org.id, "dispute_assigned", "Dispute {number} was assigned to you for mediation.")
    return d


def do_assign(session: Session, actor: Actor, d: Dispute, *, mediator_ids: Any) -> Dispute:
    """Name the mediators (the first is the lead); they must work in the handling org."""
    _office(actor, d)
    _check_state(d, "assign")
    ids = [mediator_ids] if isinstance(mediator_ids, int | str) else list(mediator_ids or [])
    try:
        wanted = list(dict.fromkeys(int(i) for i in ids if str(i).strip()))
    except (TypeError, ValueError):
        raise Invalid("{what} is not valid.", what=label("mediator_ids"), field="mediator_ids") from None
    if not wanted:
        raise Invalid("{what} is required.", what=label("mediator_ids"), field="mediator_ids")
    allowed = {u.id: u for u in mediator_candidates(session, d.handling_org_id)}
    for uid in wanted:
        if uid not in allowed:
            raise Invalid(
                "Mediators must be mediating staff of the handling organisation.", field="mediator_ids"
            )
    now = utcnow()
    current = {m.user_id: m for m in active_mediators(session, d)}
    for uid, m in current.items():
        if uid not in wanted:
            m.released_at = now
    for uid in wanted:
        if uid not in current:
            session.add(Mediator(dispute_id=d.id, user_id=uid, org_id=d.handling_org_id, assigned_at=now))
    d.lead_mediator_id = wanted[0]
    _move(
        session,
        actor,
        d,
        "assign",
        S.mediating,
        data={"mediators": [allowed[u].username for u in wanted], "lead": allowed[wanted[0]].username},
    )
    return d


def do_move_up(session: Session, actor: Actor, d: Dispute, *, reason: str, leader_id: Any = None) -> Dispute:
    """Hand the case up a level (recorded and counted); the new org assigns its own mediators."""
    _office(actor, d)
    _check_state(d, "move_up")
    reason = _text(reason, "reason", limit=2000)
    i = LEVELS.index(d.level)
    if i == len(LEVELS) - 1:
        raise Invalid("Dispute {number} is already at the highest level.", number=d.number)
    return _change_level(session, actor, d, "move_up", LEVELS[i + 1], reason, leader_id)


def do_move_down(session: Session, actor: Actor, d: Dispute, *, reason: str) -> Dispute:
    """Send the case down a level — rare, e.g. a case that turned out simple; recorded and counted."""
    _office(actor, d)
    _check_state(d, "move_down")
    reason = _text(reason, "reason", limit=2000)
    i = LEVELS.index(d.level)
    if i == 0:
        raise Invalid("Dispute {number} is already at the lowest level.", number=d.number)
    return _change_level(session, actor, d, "move_down", LEVELS[i - 1], reason, None)


def _change_level(
    session: Session, actor: Actor, d: Dispute, action: str, level: Level, reason: str, leader_id: Any
) -> Dispute:
    frm = d.level
    org = _set_level(session, d, level, leader_id)
    d.complexity = COMPLEXITY_OF_LEVEL[level]
    if action == "move_up":
        d.level_up_count += 1
    else:
        d.level_down_count += 1
    _release_mediators(session, d)
    _move(
        session,
        actor,
        d,
        action,
        S.triaged,
        note=reason,
        data={"from_level": str(frm), "to_level": str(level), "to_org": org.code, "leader": d.leader_user_id},
    )
    _notify(session, d, org.id, "dispute_assigned", "Dispute {number} was assigned to you for mediation.")
    return d


# ---- mediation ----------------------------------------------------------------------------


def do_record_round(
    session: Session,
    actor: Actor,
    d: Dispute,
    *,
    held_at: Any,
    place: str,
    attendees: str,
    minutes: str,
    outcome: Any,
) -> Dispute:
    """One mediation session: when, where, who attended, the minutes and how it ended."""
    _office(actor, d)
    _check_state(d, "record_round")
    at = _datetime(held_at, "held_at")
    now = utcnow()
    if at > now + timedelta(minutes=5):
        raise Invalid("A round is recorded after it took place; the date is in the future.", field="held_at")
    if at < d.registered_at - timedelta(days=1):
        raise Invalid("The round cannot be before the case was registered.", field="held_at")
    result = _enum(RoundOutcome, outcome, "outcome")
    seq = (session.scalar(select(func.max(Round.seq)).where(Round.dispute_id == d.id)) or 0) + 1
    r = Round(
        dispute_id=d.id,
        seq=seq,
        held_at=at,
        place=_text(place, "place", limit=200),
        attendees=_text(attendees, "attendees", limit=2000),
        minutes=_text(minutes, "minutes"),
        outcome=result,
        org_id=d.handling_org_id,
        recorded_by=actor.user_id or None,
        created_at=now,
    )
    session.add(r)
    _move(session, actor, d, "record_round", d.state, data={"round": seq, "outcome": str(result)})
    return d


def working_days(session: Session, d: Dispute, start: datetime, end: datetime) -> float:
    cal = events.calendar_for(session, d.handling_org_id)
    per_day = sum(
        (datetime.combine(date.min, b) - datetime.combine(date.min, a)).total_seconds() / 3600
        for a, b in cal.periods
    )
    return round(cal.working_hours_between(start, end) / per_day, 2)


def do_agree(
    session: Session,
    actor: Actor,
    d: Dispute,
    *,
    kind: Any,
    facts: str,
    terms: str,
    performance_deadline: Any = None,
) -> Dispute:
    """The parties agreed (fully or in part): the terms of the 人民调解协议书, the performance
    deadline, and the follow-up calls at 7 and 30 days."""
    _office(actor, d)
    _check_state(d, "agree")
    outcome = {"full": Outcome.agreement_full, "partial": Outcome.agreement_partial}.get(str(kind))
    if outcome is None:
        raise Invalid("{what} is not valid.", what=label("kind"), field="kind")
    facts = _text(facts, "facts")
    terms = _text(terms, "terms")
    deadline = _date(performance_deadline, "performance_deadline")
    now = utcnow()
    if deadline is not None and deadline < events.local_date(now):
        raise Invalid("The performance deadline is in the past.", field="performance_deadline")
    if not session.scalar(select(func.count(Round.id)).where(Round.dispute_id == d.id)):
        raise Invalid("Record at least one mediation round before the agreement.", field="kind")
    d.outcome = outcome
    d.agreement_no += 1
    d.agreement_facts = facts
    d.agreement_terms = terms
    d.performance_deadline = deadline
    d.agreed_at = now
    d.concluded_at = now
    d.resolved_level = d.level
    d.duration_days = working_days(session, d, d.registered_at, now)
    d.sealed_at, d.seal_ref, d.sealed_sha256 = None, "", ""
    _move(
        session,
        actor,
        d,
        "agree",
        S.agreed,
        data={"outcome": str(outcome), "agreement_no": d.agreement_no, "deadline": deadline},
    )
    schedule_follow_ups(session, d)
    return d


def do_confirm(session: Session, actor: Actor, d: Dispute, *, party_seq: Any) -> Dispute:
    """Record that a party confirmed (signed) the current agreement."""
    _office(actor, d)
    _check_state(d, "confirm")
    try:
        seq = int(party_seq)
    except (TypeError, ValueError):
        raise Invalid("{what} is not valid.", what=label("party_seq"), field="party_seq") from None
    party = next((p for p in d.parties if p.seq == seq), None)
    if party is None:
        raise Invalid("{what} is not valid.", what=label("party_seq"), field="party_seq")
    if party.confirmed_agreement_no == d.agreement_no:
        raise Conflict("{name} has already confirmed this agreement.", name=party.name)
    party.confirmed_at = utcnow()
    party.confirmed_agreement_no = d.agreement_no
    _move(session, actor, d, "confirm", d.state, data={"party": seq, "agreement_no": d.agreement_no})
    return d


def do_fail(session: Session, actor: Actor, d: Dispute, *, reason: str) -> Dispute:
    """Mediation failed; the case must now be referred on ("调解优先、诉讼断后")."""
    _office(actor, d)
    _check_state(d, "fail")
    d.failure_reason = _text(reason, "reason", limit=2000)
    now = utcnow()
    d.outcome = Outcome.failed
    d.concluded_at = now
    d.resolved_level = None
    d.duration_days = working_days(session, d, d.registered_at, now)
    _move(session, actor, d, "fail", S.failed, note=d.failure_reason)
    return d


def do_refer(
    session: Session, actor: Actor, d: Dispute, *, target: Any, receiving_body: str, referred_on: Any = None
) -> Dispute:
    """Refer a failed case to a court, arbitration, the petition office or the police; the org
    that first took the case stays accountable until the referral is accepted."""
    _office(actor, d)
    _check_state(d, "refer")
    t = _enum(ReferralTarget, target, "target")
    body = _text(receiving_body, "receiving_body", limit=200)
    on = _date(referred_on, "referred_on") or events.local_date(utcnow())
    if on > events.local_date(utcnow()):
        raise Invalid("The date of referral is in the future.", field="referred_on")
    d.referral_target, d.referral_body, d.referred_on = t, body, on
    _move(session, actor, d, "refer", S.referred, data={"target": str(t), "body": body, "on": on})
    return d


def do_accept_referral(
    session: Session, actor: Actor, d: Dispute, *, accepted_on: Any = None, note: str = ""
) -> Dispute:
    """The receiving body accepted the referral: first-contact responsibility ends here."""
    _need(actor, P.disputes_mediate)
    if actor.role not in (Role.admin, "system") and actor.org_id not in (d.handling_org_id, d.intake_org_id):
        raise PermissionDenied(
            "Only the organisation handling dispute {number} can do this.", number=d.number
        )
    _check_state(d, "accept_referral")
    on = _date(accepted_on, "accepted_on") or events.local_date(utcnow())
    if d.referred_on and on < d.referred_on:
        raise Invalid("The referral cannot be accepted before it was made.", field="accepted_on")
    d.referral_accepted_on = on
    d.closed_at = utcnow()
    _move(
        session,
        actor,
        d,
        "accept_referral",
        S.transferred,
        note=_optional_text(note, "note", limit=2000),
        data={"on": on},
    )
    return d


def do_withdraw(session: Session, actor: Actor, d: Dispute, *, reason: str) -> Dispute:
    _office(actor, d)
    _check_state(d, "withdraw")
    reason = _text(reason, "reason", limit=2000)
    now = utcnow()
    d.outcome = Outcome.withdrawn
    d.concluded_at = now
    d.closed_at = now
    _move(session, actor, d, "withdraw", S.withdrawn, note=reason)
    return d


def do_close(session: Session, actor: Actor, d: Dispute, *, note: str = "") -> Dispute:
    """Close an agreed case whose follow-up calls are all done (the last did not close it)."""
    _office(actor, d)
    _check_state(d, "close")
    if pending_follow_ups(session, d):
        raise Invalid("Dispute {number} still has follow-up calls to make.", number=d.number)
    d.closed_at = utcnow()
    _move(session, actor, d, "close", S.closed, note=_optional_text(note, "note", limit=2000))
    return d


# ---- follow-up calls (回访) -----------------------------------------------------------------


def follow_up_day(cal: WorkCalendar, agreed_at: datetime, days: int) -> date:
    """`days` calendar days after the agreement's local date, moved to the next working day when
    that day is a weekend or public holiday (调休 working Saturdays count as working days)."""
    d = agreed_at.astimezone(cal.tz).date() + timedelta(days=days)
    for _ in range(60):
        if cal.is_workday(d):
            return d
        d += timedelta(days=1)
    raise ValueError("no working day within 60 days: the calendar data is wrong")


def schedule_follow_ups(session: Session, d: Dispute) -> list[FollowUp]:
    """The 7- and 30-day calls of the current agreement; idempotent (one row per kind)."""
    if d.state != S.agreed or d.agreed_at is None:
        return []
    have = {
        f.kind
        for f in session.scalars(
            select(FollowUp).where(FollowUp.dispute_id == d.id, FollowUp.agreement_no == d.agreement_no)
        )
    }
    cal = events.calendar_for(session, d.handling_org_id)
    made = []
    for kind, days in FOLLOW_UP_DAYS.items():
        if kind in have:
            continue
        f = FollowUp(
            dispute_id=d.id,
            agreement_no=d.agreement_no,
            kind=kind,
            due_on=follow_up_day(cal, d.agreed_at, days),
            org_id=d.handling_org_id,
        )
        session.add(f)
        made.append(f)
    session.flush()
    return made


def do_follow_up(
    session: Session,
    actor: Actor,
    d: Dispute,
    *,
    kind: Any,
    satisfaction: Any,
    performance: Any,
    note: str = "",
) -> Dispute:
    """Record a follow-up call: the parties' satisfaction and how the agreement is performed.
    A breached agreement reopens the case for mediation; the last call, with the agreement
    performed, closes it."""
    _office(actor, d)
    _check_state(d, "follow_up")
    k = _enum(FollowUpKind, kind, "kind")
    sat = _enum(Satisfaction, satisfaction, "satisfaction")
    perf = _enum(Performance, performance, "performance")
    note = _optional_text(note, "note", limit=2000)
    pending = pending_follow_ups(session, d)
    call = next((f for f in pending if f.kind == k), None)
    if call is None:
        raise Invalid(
            "There is no pending {kind} follow-up call for dispute {number}.", kind=str(k), number=d.number
        )
    now = utcnow()
    call.done_at, call.done_by = now, actor.user_id or None
    call.satisfaction, call.performance, call.note = sat, perf, note
    data = {
        "call": str(k),
        "satisfaction": str(sat),
        "performance": str(perf),
        "agreement_no": d.agreement_no,
    }
    if perf == Performance.breached:
        for f in pending:
            if f is not call:
                f.cancelled = True
        d.reopen_count += 1
        d.outcome = None
        d.concluded_at = None
        d.resolved_level = None
        d.duration_days = None
        _move(session, actor, d, "reopen", S.mediating, note=note, data=data)
        _notify(
            session,
            d,
            d.handling_org_id,
            "dispute_reopened",
            "Dispute {number} was reopened: the agreement was breached.",
        )
        return d
    rest = [f for f in pending if f is not call]
    if not rest and perf == Performance.performed:
        d.closed_at = now
        _move(session, actor, d, "follow_up", S.closed, note=note, data=data)
    else:
        _move(session, actor, d, "follow_up", d.state, note=note, data=data)
    return d


def _notify(session: Session, d: Dispute, org_id: int | None, kind: str, message: str, **extra: Any) -> None:
    if org_id:
        events.notify(
            session,
            f"dispute:{d.id}:{kind}:{d.version}:{extra.get('key', '')}:org{org_id}",
            message=message,
            org_id=org_id,
            kind=kind,
            number=d.number,
            **{k: v for k, v in extra.items() if k != "key"},
        )


def check_follow_ups(session: Session, *, now: datetime | None = None) -> dict[str, int]:
    """Worker job: schedule the calls of agreed cases that have none yet (a safety net: the
    agreement schedules them), and tell the calling org once when a call is due and once when
    it is overdue. Idempotent: the notice key and the `notices` mark are the guards."""
    now = now or utcnow()
    today = events.local_date(now)
    counts = {"scheduled": 0, "due": 0, "overdue": 0}
    has_calls = select(FollowUp.id).where(
        FollowUp.dispute_id == Dispute.id, FollowUp.agreement_no == Dispute.agreement_no
    )
    for d in session.scalars(
        select(Dispute).where(Dispute.state == S.agreed, ~has_calls.exists()).limit(500)
    ):
        counts["scheduled"] += len(schedule_follow_ups(session, d))
    stmt = (
        select(FollowUp, Dispute)
        .join(Dispute, Dispute.id == FollowUp.dispute_id)
        .where(
            FollowUp.done_at.is_(None),
            FollowUp.cancelled.is_(False),
            FollowUp.due_on <= today,
            FollowUp.notices.not_like("%overdue%"),
        )
        .order_by(FollowUp.due_on, FollowUp.id)
        .limit(1000)
    )
    for f, d in session.execute(stmt).all():
        kind = "overdue" if f.due_on < today else "due"
        if kind in f.notices.split(","):
            continue
        message = (
            "The follow-up call for dispute {number} is overdue (due {due})."
            if kind == "overdue"
            else "The follow-up call for dispute {number} is due today."
        )
        events.notify(
            session,
            f"dispute-followup:{f.id}:{kind}",
            message=message,
            org_id=f.org_id,
            kind=f"followup_{kind}",
            number=d.number,
            due=f.due_on.isoformat(),
        )
        # A plain column update: a reminder must not bump the case's version.
        f.notices = ",".join(x for x in (f.notices, kind) if x)
        counts[kind] += 1
    session.flush()
    return counts


# ---- the agreement document and the seal hook ------------------------------------------------


def agreement_pdf(session: Session, actor: Actor, d: Dispute) -> bytes:
    """The 人民调解协议书 of the current agreement. It names the parties in full, so only readers
    who may see their personal data can have it."""
    if d.agreement_no == 0 or d.state not in (S.agreed, S.closed):
        raise Invalid("Dispute {number} has no agreement to print.", number=d.number)
    if not sees_personal(session, actor, d):
        raise PermissionDenied(
            "Only the mediating organisation can print the agreement of dispute {number}.", number=d.number
        )
    from civicgrid.disputes.agreement import render_agreement

    return render_agreement(session, d)


def agreement_for_sealing(session: Session, actor: Actor, number: str) -> tuple[bytes, str]:
    """Seal hook, part 1: the seal capability asks for the document to sign and its SHA-256."""
    import hashlib

    d = get_dispute(session, actor, number)
    pdf = agreement_pdf(session, actor, d)
    return pdf, hashlib.sha256(pdf).hexdigest()


def record_seal(
    session: Session, actor: Actor, number: str, *, seal_ref: str, document_sha256: str
) -> Dispute:
    """Seal hook, part 2: the seal capability reports that it sealed the agreement. The hash
    must be that of the current agreement (the PDF is byte-for-byte reproducible), so a seal on
    an older or altered document is refused."""
    d = get_dispute(session, actor, number)
    _office(actor, d)
    _, sha = agreement_for_sealing(session, actor, number)
    if document_sha256 != sha:
        raise Conflict(
            "The sealed document is not the current agreement of dispute {number}.", number=d.number
        )
    d.sealed_at = utcnow()
    d.seal_ref = required_text(seal_ref, "seal", "seal_ref")[:100]
    d.sealed_sha256 = sha
    _move(session, actor, d, "seal", d.state, data={"seal": d.seal_ref, "sha256": sha})
    return d


# ---- steps by name (API and pages) ----------------------------------------------------------

ACTIONS: dict[str, Callable[..., Dispute]] = {
    "triage": do_triage,
    "assign": do_assign,
    "record_round": do_record_round,
    "agree": do_agree,
    "confirm": do_confirm,
    "follow_up": do_follow_up,
    "close": do_close,
    "fail": do_fail,
    "refer": do_refer,
    "accept_referral": do_accept_referral,
    "move_up": do_move_up,
    "move_down": do_move_down,
    "withdraw": do_withdraw,
}


def act(
    session: Session, actor: Actor, number: str, action: str, *, version: int | None = None, **params: Any
) -> Dispute:
    fn = ACTIONS.get(action)
    if fn is None:
        raise NotFound("Unknown step {action}.", action=action)
    d = get_dispute(session, actor, number)
    check_version(d, version)
    return fn(session, actor, d, **params)


def _may(session: Session, actor: Actor, d: Dispute, action: str) -> bool:
    try:
        if action == "accept_referral":
            _need(actor, P.disputes_mediate)
            return actor.role in (Role.admin, "system") or actor.org_id in (
                d.handling_org_id,
                d.intake_org_id,
            )
        _office(actor, d)
    except PermissionDenied:
        return False
    return True


def available_actions(session: Session, actor: Actor, d: Dispute) -> list[str]:
    """Steps this reader may take on the case now (buttons and the API's `actions`)."""
    out = []
    for action in FLOW.offered(d.state, lambda a: _may(session, actor, d, a)):
        if action == "move_up" and d.level == Level.county:
            continue
        if action == "move_down" and d.level == Level.village:
            continue
        if action == "follow_up" and not pending_follow_ups(session, d):
            continue
        if action == "close" and pending_follow_ups(session, d):
            continue
        if action == "agree" and not session.scalar(
            select(func.count(Round.id)).where(Round.dispute_id == d.id)
        ):
            continue
        if action == "confirm" and all(p.confirmed_agreement_no == d.agreement_no for p in d.parties):
            continue
        out.append(action)
    return out


# ---- lists ----------------------------------------------------------------------------------


def list_stmt(
    actor: Actor,
    *,
    state: State | None = None,
    level: Level | None = None,
    complexity: Complexity | None = None,
    type: DisputeType | None = None,
    org_id: int | None = None,
    mediator_id: int | None = None,
    open_only: bool = False,
    q: str = "",
) -> Select[Any]:
    stmt = visible_stmt(actor)
    if state:
        stmt = stmt.where(Dispute.state == state)
    if open_only:
        stmt = stmt.where(Dispute.state.in_(OPEN_STATES))
    if level:
        stmt = stmt.where(Dispute.level == level)
    if complexity:
        stmt = stmt.where(Dispute.complexity == complexity)
    if type:
        stmt = stmt.where(Dispute.type == type)
    if org_id:
        stmt = stmt.where(Dispute.handling_org_id == org_id)
    if mediator_id:
        stmt = stmt.where(
            Dispute.id.in_(
                select(Mediator.dispute_id).where(
                    Mediator.user_id == mediator_id, Mediator.released_at.is_(None)
                )
            )
        )
    if q:
        like = f"%{q.strip()}%"
        stmt = stmt.where(
            or_(Dispute.number.like(like), Dispute.title.like(like), Dispute.description.like(like))
        )
    return stmt.order_by(Dispute.id.desc())


def untaken_dispute_events(session: Session, actor: Actor, limit: int = 50) -> list[Any]:
    """Open events of dispute categories in the reader's area that no case was taken from yet:
    what a mediator can take in at the window."""
    taken = select(Dispute.event_id).where(Dispute.event_id.is_not(None))
    cats = select(events.Category.id).where(events.Category.is_dispute.is_(True))
    stmt = (
        events.visible_stmt(actor)
        .where(
            events.Event.category_id.in_(cats),
            events.Event.state.in_(EVENT_OPEN_STATES),
            events.Event.id.not_in(taken),
        )
        .order_by(events.Event.id.desc())
        .limit(limit)
    )
    return list(session.scalars(stmt))


def overdue_follow_ups_stmt(actor: Actor, today: date) -> Select[FollowUp, Dispute]:
    return (
        select(FollowUp, Dispute)
        .join(Dispute, Dispute.id == FollowUp.dispute_id)
        .where(
            FollowUp.done_at.is_(None),
            FollowUp.cancelled.is_(False),
            FollowUp.due_on < today,
            Dispute.id.in_(visible_stmt(actor).with_only_columns(Dispute.id)),
        )
        .order_by(FollowUp.due_on, FollowUp.id)
    )


def due_follow_ups(
    session: Session, actor: Actor, *, org_id: int | None = None, until: date | None = None
) -> list[tuple[FollowUp, Dispute]]:
    until = until or events.local_date(utcnow())
    stmt = (
        select(FollowUp, Dispute)
        .join(Dispute, Dispute.id == FollowUp.dispute_id)
        .where(
            FollowUp.done_at.is_(None),
            FollowUp.cancelled.is_(False),
            FollowUp.due_on <= until,
            Dispute.id.in_(visible_stmt(actor).with_only_columns(Dispute.id)),
        )
        .order_by(FollowUp.due_on, FollowUp.id)
    )
    if org_id:
        stmt = stmt.where(FollowUp.org_id == org_id)
    return [(f, d) for f, d in session.execute(stmt.limit(200)).all()]


def difficult_cases(session: Session, actor: Actor) -> list[Dispute]:
    """Open county-level (疑难) cases in the reader's area, for the county overview."""
    stmt = visible_stmt(actor).where(Dispute.level == Level.county, Dispute.state.in_(OPEN_STATES))
    return list(session.scalars(stmt.order_by(Dispute.registered_at)))


def user_names(session: Session, ids: Iterable[int | None]) -> dict[int, str]:
    wanted = {i for i in ids if i}
    if not wanted:
        return {}
    return dict(session.execute(select(User.id, User.display_name).where(User.id.in_(wanted))).all())


def local_time(at: datetime | None) -> str:
    if at is None:
        return ""
    return at.astimezone(default_calendar().tz).strftime("%Y-%m-%d %H:%M")


def local_midday(d: date) -> datetime:
    """Noon of a local date as an aware UTC moment (demo data and tests)."""
    return datetime.combine(d, time(12, 0), default_calendar().tz).astimezone(UTC)
