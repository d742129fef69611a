"""JSON shapes of the risk API (/api/v1/risks)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from civicgrid.risks.models import RuleKind, WarningLevel, WarningState

LevelText = str  # red/orange/yellow/blue or 红/橙/黄/蓝 (checked by the service, in the reader's language)


class RuleIn(BaseModel):
    name: str = Field(max_length=100)
    kind: RuleKind
    params: dict[str, Any] = Field(default_factory=dict)
    region_code: str = Field(max_length=24)
    description: str = Field(default="", max_length=5000)
    assign_org_code: str = Field(default="", max_length=64)
    active: bool = True


class RuleUpdate(RuleIn):
    version: int | None = None


class DryRunIn(RuleIn):
    from_: date | None = Field(default=None, alias="from")
    to: date | None = None

    model_config = {"populate_by_name": True}


class PrecisionOut(BaseModel):
    real: int
    false_alarm: int
    closed: int
    rate: float | None


class RuleOut(BaseModel):
    id: int
    name: str
    description: str
    kind: RuleKind
    params: dict[str, Any]
    region_code: str
    region_name: str
    assign_org_code: str | None
    active: bool
    version: int
    open_warnings: int
    warnings: int
    precision: PrecisionOut
    precision_by_month: list[dict[str, Any]] = Field(default_factory=list)


class SimulatedOut(BaseModel):
    region_code: str
    region_name: str
    level: WarningLevel
    first_at: datetime
    last_at: datetime
    evidence: int
    samples: list[str]


class DryRunOut(BaseModel):
    kind: str
    from_: date = Field(alias="from")
    to: date
    count: int
    warnings: list[SimulatedOut]
    note: str = ""

    model_config = {"populate_by_name": True}


class WarningIn(BaseModel):
    """A warning raised by hand."""

    region_code: str = Field(max_length=24)
    level: LevelText = Field(max_length=20)
    title: str = Field(max_length=200)
    note: str = Field(default="", max_length=5000)
    event_numbers: list[str] = Field(default_factory=list, max_length=100)
    rule_id: int | None = None


class WarningOut(BaseModel):
    number: str
    title: str
    level: WarningLevel
    state: WarningState
    source: str
    rule_id: int | None
    rule_name: str | None
    region_code: str
    region_name: str
    assigned_org: str | None
    due_at: datetime | None
    clock: str
    overdue: bool
    raised_at: datetime
    evidence_count: int
    verdict: str | None
    closed_at: datetime | None


class EvidenceOut(BaseModel):
    kind: Literal["event", "dispute", "data"]
    id: int
    number: str | None = None
    title: str | None = None
    at: datetime | None = None
    lon: float | None = None
    lat: float | None = None
    url: str | None = None
    hidden: bool = False
    values: dict[str, Any] | None = None


class EntryOut(BaseModel):
    at: datetime
    actor: str
    action: str
    note: str
    data: dict[str, Any]


class TaskOut(BaseModel):
    id: int
    org: str
    description: str
    due_at: datetime | None
    state: str
    result: str
    done_at: datetime | None


class WarningDetail(WarningOut):
    feedback: str
    outcome: str
    evidence: list[EvidenceOut]
    timeline: list[EntryOut]
    tasks: list[TaskOut]
    steps: list[str]


class WarningPage(BaseModel):
    items: list[WarningOut]
    total: int
    page: int
    size: int


class MeasureIn(BaseModel):
    note: str = Field(max_length=5000)


class SpawnEventIn(BaseModel):
    category: str = Field(max_length=16)
    description: str = Field(max_length=5000)
    lon: float | None = Field(default=None, ge=-180, le=180)
    lat: float | None = Field(default=None, ge=-90, le=90)
    address: str = Field(default="", max_length=300)


class TaskIn(BaseModel):
    org_code: str = Field(max_length=64)
    description: str = Field(max_length=5000)
    due_hours: float | None = Field(default=None, ge=0, le=24 * 365)


class TaskDoneIn(BaseModel):
    result: str = Field(max_length=5000)


class CloseIn(BaseModel):
    feedback: str = Field(max_length=5000)
    outcome: str = Field(max_length=5000)
    verdict: Literal["real", "false_alarm"]


class BoardRow(BaseModel):
    region_code: str
    region_name: str
    counts: dict[str, int]
    total: int


class BoardOut(BaseModel):
    region_code: str
    region_name: str
    rows: list[BoardRow]
