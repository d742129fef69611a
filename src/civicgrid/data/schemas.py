"""Pydantic shapes of the data platform's JSON API.

The catalogue and ingestion shapes come first; other parts of the platform append theirs
at the end of this file.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from civicgrid.data.models import FieldType, Grade, OpenClass, Sensitivity, ShareClass, Theme

# ---- catalogue ----------------------------------------------------------------------------------


class FieldIn(BaseModel):
    """One column of a dataset. `rules`: not_null, regex, min, max, date (a strptime format),
    id_number, mobile (booleans or values), blocking (any violation fails the load) and
    cluster (each load sorts its rows by the field, so filtered reads on it are fast)."""

    name: str = Field(max_length=64)
    title: str = Field(default="", max_length=100)
    type: FieldType = FieldType.string
    description: str = Field(default="", max_length=2000)
    sensitivity: Sensitivity = Sensitivity.none
    mask: Literal["", "id_number", "phone", "name", "partial", "hash"] = ""
    primary_key: bool = False
    is_timestamp: bool = False
    rules: dict[str, Any] = Field(default_factory=dict)


class DatasetIn(BaseModel):
    name: str = Field(max_length=100, description="A slug: lowercase letters, digits, hyphens.")
    title: str = Field(max_length=200)
    title_en: str = Field(default="", max_length=300)
    description: str = Field(default="", max_length=20_000)
    description_en: str = Field(default="", max_length=20_000)
    tags: list[str] = Field(default_factory=list, max_length=50)
    theme: Theme
    grade: Grade
    share_class: ShareClass
    share_condition: str = Field(default="", max_length=5000)
    open_class: OpenClass
    update_frequency: str = Field(default="", max_length=32)
    source_system: str = Field(default="", max_length=200)
    spatial_scope: str = Field(default="", max_length=24)
    retention_days: int | None = Field(default=None, ge=1, le=1_000_000)
    k_threshold: int = Field(default=10, ge=1, le=1_000_000)
    owner_org: str | None = Field(default=None, max_length=64, description="Org code; your own when empty.")
    fields: list[FieldIn] = Field(default_factory=list, max_length=500)


class DatasetPatch(BaseModel):
    """Only the attributes given change; `fields` replaces the whole field list."""

    expected_version: int | None = Field(default=None, description="The metadata_version you edited.")
    title: str | None = Field(default=None, max_length=200)
    title_en: str | None = Field(default=None, max_length=300)
    description: str | None = Field(default=None, max_length=20_000)
    description_en: str | None = Field(default=None, max_length=20_000)
    tags: list[str] | None = Field(default=None, max_length=50)
    theme: Theme | None = None
    grade: Grade | None = None
    share_class: ShareClass | None = None
    share_condition: str | None = Field(default=None, max_length=5000)
    open_class: OpenClass | None = None
    update_frequency: str | None = Field(default=None, max_length=32)
    source_system: str | None = Field(default=None, max_length=200)
    spatial_scope: str | None = Field(default=None, max_length=24)
    retention_days: int | None = Field(default=None, ge=1, le=1_000_000)
    k_threshold: int | None = Field(default=None, ge=1, le=1_000_000)
    fields: list[FieldIn] | None = Field(default=None, max_length=500)


class FieldOut(FieldIn):
    pass


class DataVersionOut(BaseModel):
    version: int
    mode: str
    state: str
    rows: int
    rejected: int
    bytes: int
    sha256: str
    source: str
    progress: int
    created_by: str
    created_at: datetime
    finished_at: datetime | None
    error: str = ""
    quality: dict[str, Any] = Field(default_factory=dict)


class DatasetOut(BaseModel):
    name: str
    title: str
    title_en: str
    description: str
    description_en: str
    tags: list[str]
    theme: Theme
    grade: Grade
    share_class: ShareClass
    share_condition: str
    open_class: OpenClass
    update_frequency: str
    source_system: str
    spatial_scope: str
    retention_days: int | None
    k_threshold: int
    state: str
    owner_org: str
    owner_org_name: str
    metadata_version: int
    current_version: int | None
    rows: int
    updated_at: datetime
    fields: list[FieldOut]
    can_manage: bool = False


class MetadataVersionOut(BaseModel):
    version: int
    changed_by: str
    at: datetime
    snapshot: dict[str, Any]


class RejectedPage(BaseModel):
    version: int
    rejected: int
    rows: list[dict[str, Any]]


# ---- other parts of the data platform append their shapes below ----------------------------------


# ---- sandbox and unified search (sandbox_api) ----------------------------------------------------


class SandboxIn(BaseModel):
    sql: str = Field(min_length=1, max_length=20_000, description="One SELECT in the DuckDB dialect.")


class SandboxResultOut(BaseModel):
    id: int
    columns: list[str]
    rows: list[list[Any]]
    suppressed_groups: int = Field(description="Groups dropped for holding fewer than k rows.")
    truncated: bool
    millis: int


class SandboxQueryOut(BaseModel):
    id: int
    sql: str
    datasets: list[str]
    outcome: str
    reason: str
    rows_out: int
    suppressed_groups: int
    millis: int
    at: datetime


class SandboxQueryPage(BaseModel):
    items: list[SandboxQueryOut]
    total: int
    page: int
    size: int


class SandboxFunctionsOut(BaseModel):
    aggregates: list[str]
    scalars: list[str]


class SearchHitOut(BaseModel):
    name: str
    title: str
    title_en: str
    description: str
    org_id: int
    theme: str
    share_class: str
    open_class: str
    tags: list[str]
    fields: list[str]
    score: float


class FacetValueOut(BaseModel):
    value: str
    count: int
    label: str | None = None


class SearchOut(BaseModel):
    q: str
    terms: list[str]
    total: int
    page: int
    size: int
    items: list[SearchHitOut]
    facets: dict[str, list[FacetValueOut]]


# ---- lifecycle: retention, destruction requests, certificates (api) -----------------------------


class DestructionIn(BaseModel):
    dataset: str = Field(max_length=100)
    reason: str = Field(max_length=2000)
    versions: list[int] = Field(
        default_factory=list, max_length=1000, description="Earlier versions only; empty: the whole dataset."
    )


class DecisionIn(BaseModel):
    reason: str = Field(default="", max_length=2000, description="Required to refuse; a note when approving.")


class DestructionOut(BaseModel):
    id: int
    dataset: str
    dataset_title: str
    scope: Literal["dataset", "versions"]
    versions: list[int]
    origin: str
    reason: str
    state: str
    requested_by: str
    requested_at: datetime
    decided_by: str
    decision_reason: str
    decided_at: datetime | None
    done_at: datetime | None
    certificate_number: str | None
    files: int | None


class DueOut(BaseModel):
    dataset: str
    title: str
    retention_days: int
    scope: Literal["dataset", "versions"]
    versions: list[int]
    since: datetime
    open_request: int | None
