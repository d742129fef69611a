"""Mediation cases (矛盾纠纷调处化解): the dispute, its parties, mediators, rounds, follow-up calls
and its append-only timeline."""

from __future__ import annotations

import enum
from datetime import date, datetime

from sqlalchemy import (
    BigInteger,
    Date,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from civicgrid.core.db import Base, TimestampMixin
from civicgrid.core.workflow import TimelineColumns

# The level vocabulary (village → township → county) is the events workflow's: one enum for both.
from civicgrid.events.models import Level


def _enum(cls: type[enum.Enum], length: int = 24) -> Enum:
    return Enum(cls, native_enum=False, length=length)


class Source(enum.StrEnum):
    """How the case reached the one window (一站式受理)."""

    event = "event"  # an event of a dispute category (linked, not copied)
    walk_in = "walk_in"  # 来访
    hotline = "hotline"  # 来电 (12345 and others)
    referral = "referral"  # 移送: from a court, the police, the petition office or a prosecutor


class ReferringBody(enum.StrEnum):
    """Who referred a case to mediation (诉前/警调/访调/检调对接)."""

    court = "court"
    police = "police"
    petition = "petition"
    prosecutor = "prosecutor"


class DisputeType(enum.StrEnum):
    neighbour = "neighbour"  # 邻里纠纷
    family = "family"  # 婚姻家庭
    land = "land"  # 土地山林
    labour = "labour"  # 劳动争议
    property = "property"  # 物业纠纷
    medical = "medical"  # 医疗纠纷
    traffic = "traffic"  # 交通事故
    consumer = "consumer"  # 消费纠纷
    requisition = "requisition"  # 征地拆迁
    debt = "debt"  # 合同债务
    other = "other"  # 其他


class Complexity(enum.StrEnum):
    """Triage (分流): decides the level that mediates."""

    simple = "simple"  # 简单 → village mediation committee
    complex = "complex"  # 复杂 → township 矛调中心
    difficult = "difficult"  # 疑难 → county centre, with a named leader (包案)


class Risk(enum.StrEnum):
    low = "low"
    medium = "medium"
    high = "high"


class State(enum.StrEnum):
    registered = "registered"  # 已受理, not triaged yet
    triaged = "triaged"  # 已分流: level and org decided, no mediator yet
    mediating = "mediating"  # 调解中
    agreed = "agreed"  # 已达成协议: performance followed up by calls
    failed = "failed"  # 调解不成: must be referred on
    referred = "referred"  # 已移交: waiting for the receiving body to accept
    transferred = "transferred"  # 移交已接收: the receiving body took it over
    closed = "closed"  # 已结案: agreement performed
    withdrawn = "withdrawn"  # 撤回


class Outcome(enum.StrEnum):
    agreement_full = "agreement_full"
    agreement_partial = "agreement_partial"
    failed = "failed"
    withdrawn = "withdrawn"


class ReferralTarget(enum.StrEnum):
    """Where a failed mediation goes ("调解优先、诉讼断后")."""

    court = "court"
    arbitration = "arbitration"
    petition = "petition"
    police = "police"


class PartyRole(enum.StrEnum):
    applicant = "applicant"  # 申请人
    respondent = "respondent"  # 被申请人
    third_party = "third_party"  # 第三人


class PartyKind(enum.StrEnum):
    person = "person"
    org = "org"


class RoundOutcome(enum.StrEnum):
    progress = "progress"  # 有进展
    agreement = "agreement"  # 达成一致
    no_agreement = "no_agreement"  # 未达成一致
    adjourned = "adjourned"  # 延期


class FollowUpKind(enum.StrEnum):
    day7 = "day7"
    day30 = "day30"


class Satisfaction(enum.StrEnum):
    satisfied = "satisfied"
    basically = "basically"  # 基本满意
    dissatisfied = "dissatisfied"


class Performance(enum.StrEnum):
    performed = "performed"  # 已履行
    performing = "performing"  # 履行中
    breached = "breached"  # 未履行 / 反悔: reopens the case


class Dispute(TimestampMixin, Base):
    __tablename__ = "dispute"
    __table_args__ = (
        Index("ix_dispute_county_day", "county_id", "registered_day"),
        Index("ix_dispute_township_day", "township_id", "registered_day"),
        Index("ix_dispute_state_level", "state", "level"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[str] = mapped_column(String(32), unique=True)
    source: Mapped[Source] = mapped_column(_enum(Source))
    event_id: Mapped[int | None] = mapped_column(ForeignKey("event.id"), unique=True)
    referred_by: Mapped[ReferringBody | None] = mapped_column(_enum(ReferringBody))
    referred_by_name: Mapped[str] = mapped_column(String(200), default="")  # e.g. 某某区人民法院
    referral_ref: Mapped[str] = mapped_column(String(100), default="")  # their document number
    type: Mapped[DisputeType] = mapped_column(_enum(DisputeType))
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    amount_cents: Mapped[int | None] = mapped_column(BigInteger)  # amount at stake, in fen
    address: Mapped[str] = mapped_column(String(300), default="")
    grid_id: Mapped[int] = mapped_column(ForeignKey("region.id"), index=True)
    village_id: Mapped[int] = mapped_column(ForeignKey("region.id"))
    township_id: Mapped[int] = mapped_column(ForeignKey("region.id"))
    county_id: Mapped[int] = mapped_column(ForeignKey("region.id"))
    region_path: Mapped[str] = mapped_column(String(255), index=True)  # the grid's path: scope
    risk: Mapped[Risk] = mapped_column(_enum(Risk), default=Risk.low)
    threat_of_violence: Mapped[bool] = mapped_column(default=False)
    risk_note: Mapped[str] = mapped_column(Text, default="")
    warning_ref: Mapped[str] = mapped_column(String(64), default="")  # the risk warning raised, if any
    complexity: Mapped[Complexity | None] = mapped_column(_enum(Complexity))
    level: Mapped[Level] = mapped_column(_enum(Level))
    intake_org_id: Mapped[int] = mapped_column(ForeignKey("org.id"), index=True)  # first contact
    handling_org_id: Mapped[int] = mapped_column(ForeignKey("org.id"), index=True)
    leader_user_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))  # 包案领导
    lead_mediator_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"), index=True)
    state: Mapped[State] = mapped_column(_enum(State), index=True)
    outcome: Mapped[Outcome | None] = mapped_column(_enum(Outcome))
    registered_at: Mapped[datetime]
    registered_day: Mapped[date] = mapped_column(Date)  # local date: the statistics' period key
    concluded_at: Mapped[datetime | None]  # agreement or failure (or withdrawal)
    closed_at: Mapped[datetime | None]
    # Level at the agreement (镇村化解率) and working days from registration to the outcome.
    resolved_level: Mapped[Level | None] = mapped_column(_enum(Level))
    duration_days: Mapped[float | None] = mapped_column(Float)
    level_up_count: Mapped[int] = mapped_column(Integer, default=0)
    level_down_count: Mapped[int] = mapped_column(Integer, default=0)
    reopen_count: Mapped[int] = mapped_column(Integer, default=0)
    # The agreement (人民调解协议书); `agreement_no` counts agreements, a reopened case signs a new one.
    agreement_no: Mapped[int] = mapped_column(Integer, default=0)
    agreement_facts: Mapped[str] = mapped_column(Text, default="")
    agreement_terms: Mapped[str] = mapped_column(Text, default="")
    performance_deadline: Mapped[date | None] = mapped_column(Date)
    agreed_at: Mapped[datetime | None]
    sealed_at: Mapped[datetime | None]
    seal_ref: Mapped[str] = mapped_column(String(100), default="")
    sealed_sha256: Mapped[str] = mapped_column(String(64), default="")
    failure_reason: Mapped[str] = mapped_column(Text, default="")
    referral_target: Mapped[ReferralTarget | None] = mapped_column(_enum(ReferralTarget))
    referral_body: Mapped[str] = mapped_column(String(200), default="")
    referred_on: Mapped[date | None] = mapped_column(Date)
    referral_accepted_on: Mapped[date | None] = mapped_column(Date)
    version: Mapped[int] = mapped_column(Integer, default=1)

    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012  optimistic locking

    parties: Mapped[list[Party]] = relationship(
        cascade="all, delete-orphan", order_by="Party.seq", back_populates="dispute"
    )


class Party(Base):
    """A party of a dispute: a person or an organisation. ID numbers (身份证号 or 统一社会信用代码)
    and phones are shown only to readers with the right (`disputes.personal` and a relation)."""

    __tablename__ = "dispute_party"
    __table_args__ = (UniqueConstraint("dispute_id", "seq", name="uq_dispute_party_dispute_seq"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    dispute_id: Mapped[int] = mapped_column(ForeignKey("dispute.id", ondelete="CASCADE"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    role: Mapped[PartyRole] = mapped_column(_enum(PartyRole))
    kind: Mapped[PartyKind] = mapped_column(_enum(PartyKind), default=PartyKind.person)
    name: Mapped[str] = mapped_column(String(200))
    id_number: Mapped[str] = mapped_column(String(32), default="")
    phone: Mapped[str] = mapped_column(String(32), default="")
    address: Mapped[str] = mapped_column(String(300), default="")
    representative: Mapped[str] = mapped_column(String(100), default="")  # an org's legal representative
    confirmed_at: Mapped[datetime | None]  # confirmed the current agreement
    confirmed_agreement_no: Mapped[int | None] = mapped_column(Integer)

    dispute: Mapped[Dispute] = relationship(back_populates="parties")


class Mediator(Base):
    """A mediator assigned to a case; the lead one is `Dispute.lead_mediator_id`."""

    __tablename__ = "dispute_mediator"

    id: Mapped[int] = mapped_column(primary_key=True)
    dispute_id: Mapped[int] = mapped_column(ForeignKey("dispute.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user_account.id"), index=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("org.id"))
    assigned_at: Mapped[datetime]
    released_at: Mapped[datetime | None]  # the case moved to another level


class Round(Base):
    """One mediation session (调解): when, where, who, the minutes and how it ended."""

    __tablename__ = "dispute_round"
    __table_args__ = (UniqueConstraint("dispute_id", "seq", name="uq_dispute_round_dispute_seq"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    dispute_id: Mapped[int] = mapped_column(ForeignKey("dispute.id", ondelete="CASCADE"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    held_at: Mapped[datetime]
    place: Mapped[str] = mapped_column(String(200))
    attendees: Mapped[str] = mapped_column(Text)
    minutes: Mapped[str] = mapped_column(Text)
    outcome: Mapped[RoundOutcome] = mapped_column(_enum(RoundOutcome))
    org_id: Mapped[int] = mapped_column(ForeignKey("org.id"))
    recorded_by: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))
    created_at: Mapped[datetime]


class FollowUp(Base):
    """A follow-up call (回访) 7 and 30 days after an agreement, on working days."""

    __tablename__ = "dispute_follow_up"
    __table_args__ = (
        UniqueConstraint("dispute_id", "agreement_no", "kind", name="uq_dispute_follow_up_dispute_no_kind"),
        Index("ix_dispute_follow_up_pending", "done_at", "cancelled", "due_on"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    dispute_id: Mapped[int] = mapped_column(ForeignKey("dispute.id", ondelete="CASCADE"), index=True)
    agreement_no: Mapped[int] = mapped_column(Integer)
    kind: Mapped[FollowUpKind] = mapped_column(_enum(FollowUpKind, 8))
    due_on: Mapped[date] = mapped_column(Date)  # a working day
    org_id: Mapped[int] = mapped_column(ForeignKey("org.id"), index=True)  # who calls
    done_at: Mapped[datetime | None]
    done_by: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))
    satisfaction: Mapped[Satisfaction | None] = mapped_column(_enum(Satisfaction))
    performance: Mapped[Performance | None] = mapped_column(_enum(Performance))
    note: Mapped[str] = mapped_column(Text, default="")
    cancelled: Mapped[bool] = mapped_column(default=False)  # the case reopened before the call
    notices: Mapped[str] = mapped_column(String(64), default="")  # "due", "due,overdue": sent once


class TimelineEntry(TimelineColumns, Base):
    """One immutable step of a dispute (the database refuses UPDATE and DELETE)."""

    __tablename__ = "dispute_timeline"
    __table_args__ = (UniqueConstraint("dispute_id", "seq", name="uq_dispute_timeline_dispute_seq"),)

    dispute_id: Mapped[int] = mapped_column(ForeignKey("dispute.id"), index=True)
