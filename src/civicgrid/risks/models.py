"""The risk loop (监测—预警—处置—反馈): rules, the graded warnings they raise, the evidence
behind each warning, its handling timeline, tasks for other orgs, and the evaluation cursor."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import Enum, ForeignKey, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from civicgrid.core.db import Base, TimestampMixin, utcnow


def _enum(cls: type[enum.Enum], length: int = 16) -> Enum:
    return Enum(cls, native_enum=False, length=length)


class RuleKind(enum.StrEnum):
    threshold = "threshold"  # ≥ N events of given categories in a region within a window
    cluster = "cluster"  # ≥ N events within R metres and T days, anywhere
    trend = "trend"  # week-over-week growth ≥ X % with at least N events
    repeat = "repeat"  # the same address or party in ≥ N events (or disputes) within D days
    data = "data"  # a condition on a data-platform dataset
    manual = "manual"  # a person raises one (no automatic evaluation)


class WarningLevel(enum.StrEnum):
    blue = "blue"  # 蓝色: general
    yellow = "yellow"  # 黄色: larger
    orange = "orange"  # 橙色: serious
    red = "red"  # 红色: most serious


LEVEL_RANK = {WarningLevel.blue: 1, WarningLevel.yellow: 2, WarningLevel.orange: 3, WarningLevel.red: 4}
LEVELS_DESC = (WarningLevel.red, WarningLevel.orange, WarningLevel.yellow, WarningLevel.blue)
LEVEL_LABELS = {
    WarningLevel.red: "Red",
    WarningLevel.orange: "Orange",
    WarningLevel.yellow: "Yellow",
    WarningLevel.blue: "Blue",
}


class WarningState(enum.StrEnum):
    open = "open"  # raised, the assigned org has not acted yet
    handling = "handling"  # measures recorded
    closed = "closed"  # feedback given; verdict real risk or false alarm


class Verdict(enum.StrEnum):
    real = "real"  # the risk was real
    false_alarm = "false_alarm"


class TaskState(enum.StrEnum):
    open = "open"
    done = "done"


class RiskRule(TimestampMixin, Base):
    """A rule an admin configured. `params` is the kind's JSON (see risks/rules.py); the rule
    watches events inside the subtree of `region_id`."""

    __tablename__ = "risk_rule"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str] = mapped_column(Text, default="")
    kind: Mapped[RuleKind] = mapped_column(_enum(RuleKind))
    params: Mapped[str] = mapped_column(Text, default="{}")
    region_id: Mapped[int] = mapped_column(ForeignKey("region.id"), index=True)
    region_path: Mapped[str] = mapped_column(String(255), index=True)
    # Who handles its warnings; empty: the office of the warning's region (township, else county).
    assign_org_id: Mapped[int | None] = mapped_column(ForeignKey("org.id"))
    active: Mapped[bool] = mapped_column(default=True)
    created_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))
    version: Mapped[int] = mapped_column(Integer, default=1)

    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012  optimistic locking


class Warning(TimestampMixin, Base):
    """A graded risk warning. `dedup_key` is set while the warning is open for a rule (or a
    machine source) and region: a partial unique index keeps one open warning per key."""

    __tablename__ = "risk_warning"
    __table_args__ = (
        Index(
            "uq_risk_warning_open_key",
            "dedup_key",
            unique=True,
            postgresql_where=text("state != 'closed'"),
            sqlite_where=text("state != 'closed'"),
        ),
        Index("ix_risk_warning_state_level", "state", "level"),
        Index("ix_risk_warning_rule_closed", "rule_id", "closed_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[str] = mapped_column(String(32), unique=True)
    title: Mapped[str] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(String(16))  # "rule", "manual", "disputes", …
    rule_id: Mapped[int | None] = mapped_column(ForeignKey("risk_rule.id"))
    region_id: Mapped[int] = mapped_column(ForeignKey("region.id"), index=True)
    region_path: Mapped[str] = mapped_column(String(255), index=True)
    level: Mapped[WarningLevel] = mapped_column(_enum(WarningLevel))
    state: Mapped[WarningState] = mapped_column(_enum(WarningState), default=WarningState.open)
    dedup_key: Mapped[str | None] = mapped_column(String(64))
    assigned_org_id: Mapped[int | None] = mapped_column(ForeignKey("org.id"), index=True)
    clock: Mapped[str] = mapped_column(String(16), default="working")  # "working" | "calendar"
    due_at: Mapped[datetime | None]
    raised_at: Mapped[datetime] = mapped_column(default=utcnow)
    raised_by: Mapped[str] = mapped_column(String(64))
    raised_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))
    upgraded_at: Mapped[datetime | None]
    last_evidence_at: Mapped[datetime | None]
    evidence_count: Mapped[int] = mapped_column(Integer, default=0)
    feedback: Mapped[str] = mapped_column(Text, default="")  # what was done
    outcome: Mapped[str] = mapped_column(Text, default="")  # what came of it
    verdict: Mapped[Verdict | None] = mapped_column(_enum(Verdict))
    closed_at: Mapped[datetime | None]
    closed_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))
    version: Mapped[int] = mapped_column(Integer, default=1)

    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012  optimistic locking


class WarningEvidence(Base):
    """One event, dispute or data row behind a warning (linked, never copied)."""

    __tablename__ = "risk_evidence"
    __table_args__ = (
        UniqueConstraint("warning_id", "kind", "ref_id", name="uq_risk_evidence_warning_kind_ref"),
        Index("ix_risk_evidence_kind_ref", "kind", "ref_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    warning_id: Mapped[int] = mapped_column(ForeignKey("risk_warning.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))  # "event", "dispute", "data"
    ref_id: Mapped[int] = mapped_column(Integer)
    added_at: Mapped[datetime] = mapped_column(default=utcnow)


class WarningEntry(Base):
    """One step of a warning's life: raised, evidence added, upgraded, a measure, a spawned
    event or task, feedback and closing. Append-only."""

    __tablename__ = "risk_warning_entry"

    id: Mapped[int] = mapped_column(primary_key=True)
    warning_id: Mapped[int] = mapped_column(ForeignKey("risk_warning.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(String(64))
    actor_user_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))
    org_id: Mapped[int | None] = mapped_column(ForeignKey("org.id"))
    action: Mapped[str] = mapped_column(String(16))
    note: Mapped[str] = mapped_column(Text, default="")
    data: Mapped[str] = mapped_column(Text, default="{}")


class WarningTask(Base):
    """Work the assigned org hands to another org while handling a warning."""

    __tablename__ = "risk_task"

    id: Mapped[int] = mapped_column(primary_key=True)
    warning_id: Mapped[int] = mapped_column(ForeignKey("risk_warning.id", ondelete="CASCADE"), index=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("org.id"), index=True)
    description: Mapped[str] = mapped_column(Text)
    due_at: Mapped[datetime | None]
    state: Mapped[TaskState] = mapped_column(_enum(TaskState, 8), default=TaskState.open)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str] = mapped_column(String(64))
    done_at: Mapped[datetime | None]
    done_by: Mapped[str] = mapped_column(String(64), default="")
    result: Mapped[str] = mapped_column(Text, default="")


class DataRow(Base):
    """A data-platform row that a data rule found, kept as evidence (non-personal fields only),
    identified by rule, dataset version and a hash of its values."""

    __tablename__ = "risk_data_row"
    __table_args__ = (
        UniqueConstraint(
            "rule_id", "dataset_id", "data_version", "row_hash", name="uq_risk_data_row_rule_version_hash"
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    rule_id: Mapped[int] = mapped_column(ForeignKey("risk_rule.id", ondelete="CASCADE"))
    dataset_id: Mapped[int] = mapped_column(ForeignKey("dataset.id"))
    data_version: Mapped[int] = mapped_column(Integer)
    row_hash: Mapped[str] = mapped_column(String(64))
    values: Mapped[str] = mapped_column(Text)  # JSON of the row's shown fields
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Subject(Base):
    """The address or party of an event (or dispute) as a hash, so the repeat rule finds the
    others of the same subject through one index range (events have no address index)."""

    __tablename__ = "risk_subject"
    __table_args__ = (
        UniqueConstraint("source", "ref_id", "kind", name="uq_risk_subject_source_ref_kind"),
        Index("ix_risk_subject_key_at", "kind", "key", "at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(8))  # "address" | "party"
    key: Mapped[str] = mapped_column(String(32))  # sha256 of the normalised value, truncated
    source: Mapped[str] = mapped_column(String(8))  # "event" | "dispute"
    ref_id: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime]


class Cursor(Base):
    """How far the incremental evaluation has read a stream (event ids); one row per stream,
    locked by the worker that advances it."""

    __tablename__ = "risk_cursor"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    last_id: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
