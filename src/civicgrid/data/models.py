"""The public data platform (公共数据平台): catalogue, data versions, applications, grants,
API keys, metering, sandbox log and destruction certificates."""

from __future__ import annotations

import enum
from datetime import date, datetime

from sqlalchemy import Date, Enum, ForeignKey, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from civicgrid.core.db import Base, TimestampMixin, utcnow


def _enum(cls: type[enum.Enum], length: int = 16) -> Enum:
    return Enum(cls, native_enum=False, length=length)


class Theme(enum.StrEnum):
    people = "people"  # 人
    land = "land"  # 地
    matter = "matter"  # 事
    thing = "thing"  # 物
    organisation = "organisation"  # 组织
    other = "other"  # 其他


class Grade(enum.StrEnum):
    general = "general"  # 一般
    important = "important"  # 重要
    core = "core"  # 核心


class ShareClass(enum.StrEnum):
    unconditional = "unconditional"  # 无条件共享
    conditional = "conditional"  # 有条件共享
    none = "none"  # 不予共享


class OpenClass(enum.StrEnum):
    open = "open"  # 无条件开放
    conditional = "conditional"  # 有条件开放
    closed = "closed"  # 不予开放


class FieldType(enum.StrEnum):
    string = "string"
    integer = "integer"
    float = "float"
    boolean = "boolean"
    date = "date"
    datetime = "datetime"


class Sensitivity(enum.StrEnum):
    none = "none"
    personal = "personal"
    sensitive = "sensitive"


class DatasetState(enum.StrEnum):
    active = "active"
    destroyed = "destroyed"


class Dataset(TimestampMixin, Base):
    __tablename__ = "dataset"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)  # CKAN "name": lowercase slug
    owner_org_id: Mapped[int] = mapped_column(ForeignKey("org.id"), index=True)
    title: Mapped[str] = mapped_column(String(200))
    title_en: Mapped[str] = mapped_column(String(300), default="")
    description: Mapped[str] = mapped_column(Text, default="")
    description_en: Mapped[str] = mapped_column(Text, default="")
    tags: Mapped[str] = mapped_column(Text, default="[]")  # JSON list of strings
    theme: Mapped[Theme] = mapped_column(_enum(Theme))
    grade: Mapped[Grade] = mapped_column(_enum(Grade))
    share_class: Mapped[ShareClass] = mapped_column(_enum(ShareClass))
    share_condition: Mapped[str] = mapped_column(Text, default="")  # the condition, or the basis for refusing
    open_class: Mapped[OpenClass] = mapped_column(_enum(OpenClass))
    update_frequency: Mapped[str] = mapped_column(String(32), default="")
    source_system: Mapped[str] = mapped_column(String(200), default="")
    spatial_scope: Mapped[str] = mapped_column(String(24), default="")  # a region code
    retention_days: Mapped[int | None] = mapped_column(Integer)
    k_threshold: Mapped[int] = mapped_column(Integer, default=10)  # sandbox: smallest group shown
    state: Mapped[DatasetState] = mapped_column(_enum(DatasetState), default=DatasetState.active)
    metadata_version: Mapped[int] = mapped_column(Integer, default=1)
    current_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("data_version.id", use_alter=True, name="fk_dataset_current_version")
    )

    fields: Mapped[list[DatasetField]] = relationship(
        cascade="all, delete-orphan", order_by="DatasetField.position", lazy="selectin"
    )


class DatasetField(Base):
    __tablename__ = "dataset_field"
    __table_args__ = (UniqueConstraint("dataset_id", "name", name="uq_dataset_field_dataset_name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("dataset.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(String(100), default="")
    type: Mapped[FieldType] = mapped_column(_enum(FieldType))
    description: Mapped[str] = mapped_column(Text, default="")
    sensitivity: Mapped[Sensitivity] = mapped_column(_enum(Sensitivity), default=Sensitivity.none)
    mask: Mapped[str] = mapped_column(
        String(16), default=""
    )  # id_number | phone | name | partial | hash | ""
    primary_key: Mapped[bool] = mapped_column(default=False)
    is_timestamp: Mapped[bool] = mapped_column(default=False)
    rules: Mapped[str] = mapped_column(
        Text, default="{}"
    )  # JSON: not_null, regex, min, max, id_number, mobile


class MetadataVersion(Base):
    """Every change of a dataset's catalogue entry, kept whole."""

    __tablename__ = "dataset_metadata_version"
    __table_args__ = (
        UniqueConstraint("dataset_id", "version", name="uq_dataset_metadata_version_dataset_version"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("dataset.id", ondelete="CASCADE"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    snapshot: Mapped[str] = mapped_column(Text)
    changed_by: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(default=utcnow)


class VersionState(enum.StrEnum):
    loading = "loading"
    ready = "ready"
    failed = "failed"
    superseded = "superseded"
    destroyed = "destroyed"


class DataVersion(Base):
    """One load of a dataset's data: Parquet files under the data dir, with its quality report."""

    __tablename__ = "data_version"
    __table_args__ = (UniqueConstraint("dataset_id", "version", name="uq_data_version_dataset_version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("dataset.id", ondelete="CASCADE"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    mode: Mapped[str] = mapped_column(String(8))  # append | replace
    state: Mapped[VersionState] = mapped_column(_enum(VersionState), default=VersionState.loading)
    path: Mapped[str] = mapped_column(String(500), default="")  # folder, relative to the data dir
    rows: Mapped[int] = mapped_column(Integer, default=0)
    rejected: Mapped[int] = mapped_column(Integer, default=0)
    bytes: Mapped[int] = mapped_column(Integer, default=0)
    sha256: Mapped[str] = mapped_column(String(64), default="")  # of the version's files, in name order
    source: Mapped[str] = mapped_column(String(300), default="")  # file name or "sql"
    quality: Mapped[str] = mapped_column(Text, default="{}")  # per-field completeness and validity
    error: Mapped[str] = mapped_column(Text, default="")
    progress: Mapped[int] = mapped_column(Integer, default=0)  # rows read so far
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]


class ApplicationState(enum.StrEnum):
    pending = "pending"
    approved = "approved"
    refused = "refused"
    withdrawn = "withdrawn"


class Application(TimestampMixin, Base):
    """A consumer org asks for a dataset (统一申请)."""

    __tablename__ = "data_application"

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("dataset.id"), index=True)
    consumer_org_id: Mapped[int] = mapped_column(ForeignKey("org.id"), index=True)
    applicant: Mapped[str] = mapped_column(String(64))
    purpose: Mapped[str] = mapped_column(Text)
    fields: Mapped[str] = mapped_column(Text)  # JSON list
    row_filter: Mapped[str] = mapped_column(Text, default="[]")  # JSON [{"field","op","value"}]
    mode: Mapped[str] = mapped_column(String(8), default="api")  # api | sandbox
    until: Mapped[date] = mapped_column(Date)
    state: Mapped[ApplicationState] = mapped_column(_enum(ApplicationState), default=ApplicationState.pending)
    decided_by: Mapped[str] = mapped_column(String(64), default="")
    decision_reason: Mapped[str] = mapped_column(Text, default="")


class Grant(Base):
    """The one access policy an approval compiles into; the API, the sandbox and the audit enforce it."""

    __tablename__ = "data_grant"

    id: Mapped[int] = mapped_column(primary_key=True)
    application_id: Mapped[int] = mapped_column(ForeignKey("data_application.id"), unique=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("dataset.id"), index=True)
    consumer_org_id: Mapped[int] = mapped_column(ForeignKey("org.id"), index=True)
    fields: Mapped[str] = mapped_column(Text)  # JSON list of readable fields
    clear_fields: Mapped[str] = mapped_column(Text, default="[]")  # personal fields granted unmasked
    row_filter: Mapped[str] = mapped_column(Text, default="[]")
    mode: Mapped[str] = mapped_column(String(8), default="api")
    quota_rows_per_day: Mapped[int] = mapped_column(Integer, default=100_000)
    rate_per_minute: Mapped[int] = mapped_column(Integer, default=600)
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKey(Base):
    """A key of one consumer application (统一供需), stored hashed."""

    __tablename__ = "data_api_key"

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("org.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class Usage(Base):
    """Metering: calls and rows per key, dataset and day (flushed in batches)."""

    __tablename__ = "data_usage"
    __table_args__ = (
        UniqueConstraint(
            "key_id", "dataset_id", "day", "channel", name="uq_data_usage_key_dataset_day_channel"
        ),
        Index("ix_data_usage_dataset_day", "dataset_id", "day"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    key_id: Mapped[int | None] = mapped_column(ForeignKey("data_api_key.id"))
    dataset_id: Mapped[int] = mapped_column(ForeignKey("dataset.id"))
    day: Mapped[date] = mapped_column(Date)
    channel: Mapped[str] = mapped_column(String(16))  # api | ckan | sandbox
    calls: Mapped[int] = mapped_column(Integer, default=0)
    rows: Mapped[int] = mapped_column(Integer, default=0)


class SandboxQuery(Base):
    __tablename__ = "data_sandbox_query"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user_account.id"), index=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("org.id"))
    sql: Mapped[str] = mapped_column(Text)
    datasets: Mapped[str] = mapped_column(Text, default="[]")
    outcome: Mapped[str] = mapped_column(String(16))  # ok | refused | failed | timeout
    reason: Mapped[str] = mapped_column(Text, default="")
    rows_out: Mapped[int] = mapped_column(Integer, default=0)
    suppressed_groups: Mapped[int] = mapped_column(Integer, default=0)
    millis: Mapped[int] = mapped_column(Integer, default=0)
    at: Mapped[datetime] = mapped_column(default=utcnow)


class DestructionState(enum.StrEnum):
    requested = "requested"
    approved = "approved"
    refused = "refused"
    done = "done"


#: Destruction states in which a request is still open (at most one per dataset).
OPEN_DESTRUCTION = "state IN ('requested', 'approved')"


class Destruction(Base):
    """A request to destroy a dataset's data — the whole dataset or some of its versions — and,
    once carried out, its certificate (销毁证明): what, when, who asked, who approved, and the
    SHA-256 and size of every removed file."""

    __tablename__ = "data_destruction"
    __table_args__ = (
        # One open request per dataset: the retention job and two stewards cannot race.
        Index(
            "uq_data_destruction_open",
            "dataset_id",
            unique=True,
            sqlite_where=text(OPEN_DESTRUCTION),
            postgresql_where=text(OPEN_DESTRUCTION),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("dataset.id"), index=True)
    scope: Mapped[str] = mapped_column(String(16), default="dataset")  # dataset | versions
    versions: Mapped[str] = mapped_column(Text, default="[]")  # JSON version numbers (scope versions)
    origin: Mapped[str] = mapped_column(String(16), default="user")  # user | retention (the worker)
    requested_by: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text)
    state: Mapped[DestructionState] = mapped_column(
        _enum(DestructionState), default=DestructionState.requested
    )
    approved_by: Mapped[str] = mapped_column(String(64), default="")  # who decided (approved or refused)
    decision_reason: Mapped[str] = mapped_column(Text, default="")
    requested_at: Mapped[datetime] = mapped_column(default=utcnow)
    decided_at: Mapped[datetime | None]
    done_at: Mapped[datetime | None]
    certificate: Mapped[str] = mapped_column(Text, default="")  # JSON: what, when, who, hashes removed
