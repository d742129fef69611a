"""Pydantic shapes of the events API."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from civicgrid.core.vocab import Platform
from civicgrid.events.models import Channel, HandleUnit, Level, Responsibility, Severity, State


class CategoryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    code: str
    name: str
    name_en: str
    parent_code: str | None = None
    platform: Platform
    severity: Severity
    responsibility: Responsibility
    start_level: Level
    accept_hours: float
    handle_amount: float
    handle_unit: HandleUnit
    verify_hours: float
    escalate_when_overdue: bool
    dup_radius_m: float
    dup_window_hours: float
    is_dispute: bool
    active: bool
    version: int


class CategoryUpdate(BaseModel):
    name: str | None = Field(default=None, min_length=1, max_length=100)
    name_en: str | None = Field(default=None, max_length=200)
    severity: Severity | None = None
    responsibility: Responsibility | None = None
    start_level: Level | None = None
    accept_hours: float | None = Field(default=None, gt=0, le=720)
    handle_amount: float | None = Field(default=None, gt=0, le=720)
    handle_unit: HandleUnit | None = None
    verify_hours: float | None = Field(default=None, gt=0, le=720)
    escalate_when_overdue: bool | None = None
    dup_radius_m: float | None = Field(default=None, ge=0, le=10000)
    dup_window_hours: float | None = Field(default=None, ge=0, le=24 * 90)
    active: bool | None = None


class EventIn(BaseModel):
    category: str = Field(min_length=1, max_length=16, description="Category code, e.g. 0102")
    lon: float = Field(ge=-180, le=180)
    lat: float = Field(ge=-90, le=90)
    description: str = Field(min_length=1, max_length=5000)
    title: str = Field(default="", max_length=200)
    address: str = Field(default="", max_length=300)
    reporter_name: str = Field(default="", max_length=100)
    reporter_phone: str = Field(default="", max_length=32)


class InternalEventIn(EventIn):
    """For risk rules and other systems: `external_id` makes a repeated call return the same event."""

    external_id: str = Field(min_length=1, max_length=64)
    channel: Channel = Channel.internal


class EventOut(BaseModel):
    number: str
    state: State
    category: str
    category_name: str
    platform: Platform
    title: str
    description: str
    address: str
    lon: float
    lat: float
    grid_code: str
    level: Level
    channel: Channel
    reporter: str  # masked unless the reader may see it
    owner_org: str
    lead_org: str | None
    reported_at: datetime
    accept_due_at: datetime
    handle_due_at: datetime | None
    verify_due_at: datetime | None
    closed_at: datetime | None
    result: str
    reject_reason: str
    reject_basis: str
    redirect_to: str
    rating: int | None
    rework_count: int
    handback_count: int
    duplicate_of: str | None
    merged_into: str | None
    version: int


class TimelineOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    seq: int
    at: datetime
    actor: str
    action: str
    from_state: str | None
    to_state: str
    note: str
    data: str


class EventDetail(EventOut):
    timeline: list[TimelineOut]
    actions: list[str]  # the steps the reader may take now
    duplicates: list[str]  # numbers of suggested merge targets


class EventPage(BaseModel):
    items: list[EventOut]
    total: int
    page: int
    size: int


class ActionIn(BaseModel):
    """Parameters of a step; which ones a step needs is in `actions.PARAMS`."""

    version: int | None = Field(default=None, description="The version you saw; a newer one means a conflict")
    reason: str | None = Field(default=None, max_length=2000)
    basis: str | None = Field(default=None, max_length=300)
    redirect_to: str | None = Field(default=None, max_length=300)
    into_number: str | None = Field(default=None, max_length=32)
    lead_org_id: int | None = None
    assist_org_ids: list[int] | None = None
    note: str | None = Field(default=None, max_length=2000)
    hours: float | None = None
    grant: bool | None = None
    result: str | None = Field(default=None, max_length=5000)
    passed: bool | None = None
    score: int | None = None
    comment: str | None = Field(default=None, max_length=1000)
    due_hours: float | None = None


class NotificationOut(BaseModel):
    id: int
    kind: str
    message: str
    event_number: str | None
    created_at: datetime
    read_at: datetime | None
