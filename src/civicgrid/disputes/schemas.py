"""JSON shapes of the mediation API. Names of parties may be blank here on purpose: the service
refuses a nameless party with a message in the reader's language (not a generic 422)."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, Field

from civicgrid.disputes.models import (
    Complexity,
    DisputeType,
    PartyKind,
    PartyRole,
    ReferringBody,
    Risk,
    Source,
)


class PartyIn(BaseModel):
    name: str = Field("", max_length=200)
    role: PartyRole = PartyRole.applicant
    kind: PartyKind = PartyKind.person
    id_number: str = Field("", max_length=32, description="身份证号, or 统一社会信用代码 for an org")
    phone: str = Field("", max_length=32)
    address: str = Field("", max_length=300)
    representative: str = Field("", max_length=100, description="An org's legal representative")


class DisputeIn(BaseModel):
    source: Source
    type: DisputeType | None = Field(None, description="Default for an event: its category's type")
    title: str = Field("", max_length=200)
    description: str = Field("", max_length=5000)
    amount: Decimal | None = Field(None, ge=0, le=Decimal("999999999999"), description="Yuan at stake")
    address: str = Field("", max_length=300)
    grid_code: str | None = Field(None, max_length=24)
    lon: float | None = Field(None, ge=-180, le=180)
    lat: float | None = Field(None, ge=-90, le=90)
    parties: list[PartyIn] = Field(default_factory=list, max_length=50)
    event_number: str | None = Field(None, max_length=32, description="For source=event")
    referred_by: ReferringBody | None = Field(None, description="For source=referral")
    referred_by_name: str = Field("", max_length=200)
    referral_ref: str = Field("", max_length=100)
    risk: Risk = Risk.low
    threat_of_violence: bool = False
    risk_note: str = Field("", max_length=2000)
    complexity: Complexity | None = Field(None, description="Triage at once")
    leader_id: int | None = Field(None, ge=1, le=2**31 - 1)
    take: bool = Field(False, description="Become the case's mediator (when it stays at your level)")


class ActionIn(BaseModel):
    """Parameters of one step; each step reads the ones it takes (see the `actions` of a case)."""

    version: int | None = Field(None, ge=1, le=2**31 - 1)
    complexity: str | None = Field(None, max_length=16)
    leader_id: int | None = Field(None, ge=1, le=2**31 - 1)
    mediator_ids: list[int] | None = Field(None, max_length=10)
    note: str | None = Field(None, max_length=2000)
    reason: str | None = Field(None, max_length=2000)
    held_at: datetime | None = None
    place: str | None = Field(None, max_length=200)
    attendees: str | None = Field(None, max_length=2000)
    minutes: str | None = Field(None, max_length=5000)
    outcome: str | None = Field(None, max_length=16)
    kind: str | None = Field(None, max_length=16)
    facts: str | None = Field(None, max_length=5000)
    terms: str | None = Field(None, max_length=5000)
    performance_deadline: date | None = None
    party_seq: int | None = Field(None, ge=1, le=50)
    target: str | None = Field(None, max_length=16)
    receiving_body: str | None = Field(None, max_length=200)
    referred_on: date | None = None
    accepted_on: date | None = None
    satisfaction: str | None = Field(None, max_length=16)
    performance: str | None = Field(None, max_length=16)


class PartyOut(BaseModel):
    seq: int
    role: str
    kind: str
    name: str
    id_number: str
    phone: str
    address: str
    representative: str
    confirmed: bool


class MediatorOut(BaseModel):
    user_id: int
    name: str | None
    lead: bool


class RoundOut(BaseModel):
    seq: int
    held_at: datetime
    place: str
    attendees: str
    minutes: str
    outcome: str


class FollowUpOut(BaseModel):
    agreement_no: int
    kind: str
    due_on: date
    done_at: datetime | None
    satisfaction: str | None
    performance: str | None
    note: str
    cancelled: bool


class TimelineOut(BaseModel):
    seq: int
    at: datetime
    actor: str
    action: str
    from_state: str | None
    to_state: str
    note: str
    data: dict[str, Any]


class DisputeOut(BaseModel):
    number: str
    state: str
    source: str
    event_number: str | None
    referred_by: str | None
    referred_by_name: str
    type: str
    title: str
    amount: str | None
    grid_code: str
    risk: str
    threat_of_violence: bool
    warning_ref: str | None
    complexity: str | None
    level: str
    handling_org: str
    intake_org: str
    accountable_org: str
    leader: str | None
    outcome: str | None
    registered_at: datetime
    concluded_at: datetime | None
    duration_days: float | None
    level_up_count: int
    level_down_count: int
    reopen_count: int
    version: int


class DisputeDetail(DisputeOut):
    description: str
    address: str
    parties: list[PartyOut]
    mediators: list[MediatorOut]
    agreement_no: int
    agreement_facts: str
    agreement_terms: str
    performance_deadline: date | None
    sealed_at: datetime | None
    failure_reason: str
    referral_target: str | None
    referral_body: str
    referred_on: date | None
    referral_accepted_on: date | None
    rounds: list[RoundOut]
    follow_ups: list[FollowUpOut]
    timeline: list[TimelineOut]
    actions: list[str]


class DisputePage(BaseModel):
    items: list[DisputeOut]
    total: int
    page: int
    size: int
