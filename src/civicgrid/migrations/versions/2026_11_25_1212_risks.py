"""risk rules and warnings (issue 6 part B)

Revision ID: c0c3e0000003
Revises: c0c2d0000002
Create Date: 2026-11-25 12:12:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "c0c3e0000003"
down_revision: str | None = "c0c2d0000002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def _enum(name: str, *values: str, length: int = 16) -> sa.Enum:
    return sa.Enum(*values, name=name, native_enum=False, length=length)


def upgrade() -> None:
    op.create_table(
        "risk_rule",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column(
            "kind",
            _enum("rulekind", "threshold", "cluster", "trend", "repeat", "data", "manual"),
            nullable=False,
        ),
        sa.Column("params", sa.Text(), nullable=False),
        sa.Column("region_id", sa.Integer(), nullable=False),
        sa.Column("region_path", sa.String(length=255), nullable=False),
        sa.Column("assign_org_id", sa.Integer(), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_by_user_id", sa.Integer(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.ForeignKeyConstraint(["region_id"], ["region.id"], name=op.f("fk_risk_rule_region_id_region")),
        sa.ForeignKeyConstraint(["assign_org_id"], ["org.id"], name=op.f("fk_risk_rule_assign_org_id_org")),
        sa.ForeignKeyConstraint(
            ["created_by_user_id"],
            ["user_account.id"],
            name=op.f("fk_risk_rule_created_by_user_id_user_account"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_risk_rule")),
    )
    op.create_index(op.f("ix_risk_rule_region_id"), "risk_rule", ["region_id"])
    op.create_index(op.f("ix_risk_rule_region_path"), "risk_rule", ["region_path"])

    op.create_table(
        "risk_warning",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("number", sa.String(length=32), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("rule_id", sa.Integer(), nullable=True),
        sa.Column("region_id", sa.Integer(), nullable=False),
        sa.Column("region_path", sa.String(length=255), nullable=False),
        sa.Column("level", _enum("warninglevel", "blue", "yellow", "orange", "red"), nullable=False),
        sa.Column("state", _enum("warningstate", "open", "handling", "closed"), nullable=False),
        sa.Column("dedup_key", sa.String(length=64), nullable=True),
        sa.Column("assigned_org_id", sa.Integer(), nullable=True),
        sa.Column("clock", sa.String(length=16), nullable=False),
        sa.Column("due_at", TS, nullable=True),
        sa.Column("raised_at", TS, nullable=False),
        sa.Column("raised_by", sa.String(length=64), nullable=False),
        sa.Column("raised_by_user_id", sa.Integer(), nullable=True),
        sa.Column("upgraded_at", TS, nullable=True),
        sa.Column("last_evidence_at", TS, nullable=True),
        sa.Column("evidence_count", sa.Integer(), nullable=False),
        sa.Column("feedback", sa.Text(), nullable=False),
        sa.Column("outcome", sa.Text(), nullable=False),
        sa.Column("verdict", _enum("verdict", "real", "false_alarm"), nullable=True),
        sa.Column("closed_at", TS, nullable=True),
        sa.Column("closed_by_user_id", sa.Integer(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["rule_id"], ["risk_rule.id"], name=op.f("fk_risk_warning_rule_id_risk_rule")
        ),
        sa.ForeignKeyConstraint(["region_id"], ["region.id"], name=op.f("fk_risk_warning_region_id_region")),
        sa.ForeignKeyConstraint(
            ["assigned_org_id"], ["org.id"], name=op.f("fk_risk_warning_assigned_org_id_org")
        ),
        sa.ForeignKeyConstraint(
            ["raised_by_user_id"],
            ["user_account.id"],
            name=op.f("fk_risk_warning_raised_by_user_id_user_account"),
        ),
        sa.ForeignKeyConstraint(
            ["closed_by_user_id"],
            ["user_account.id"],
            name=op.f("fk_risk_warning_closed_by_user_id_user_account"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_risk_warning")),
        sa.UniqueConstraint("number", name=op.f("uq_risk_warning_number")),
    )
    open_only = sa.text("state != 'closed'")
    op.create_index(
        "uq_risk_warning_open_key",
        "risk_warning",
        ["dedup_key"],
        unique=True,
        postgresql_where=open_only,
        sqlite_where=open_only,
    )
    op.create_index("ix_risk_warning_state_level", "risk_warning", ["state", "level"])
    op.create_index("ix_risk_warning_rule_closed", "risk_warning", ["rule_id", "closed_at"])
    op.create_index(op.f("ix_risk_warning_region_id"), "risk_warning", ["region_id"])
    op.create_index(op.f("ix_risk_warning_region_path"), "risk_warning", ["region_path"])
    op.create_index(op.f("ix_risk_warning_assigned_org_id"), "risk_warning", ["assigned_org_id"])

    op.create_table(
        "risk_evidence",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("warning_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("ref_id", sa.Integer(), nullable=False),
        sa.Column("added_at", TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["warning_id"],
            ["risk_warning.id"],
            ondelete="CASCADE",
            name=op.f("fk_risk_evidence_warning_id_risk_warning"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_risk_evidence")),
        sa.UniqueConstraint("warning_id", "kind", "ref_id", name="uq_risk_evidence_warning_kind_ref"),
    )
    op.create_index("ix_risk_evidence_kind_ref", "risk_evidence", ["kind", "ref_id"])

    op.create_table(
        "risk_warning_entry",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("warning_id", sa.Integer(), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("actor_user_id", sa.Integer(), nullable=True),
        sa.Column("org_id", sa.Integer(), nullable=True),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["warning_id"],
            ["risk_warning.id"],
            ondelete="CASCADE",
            name=op.f("fk_risk_warning_entry_warning_id_risk_warning"),
        ),
        sa.ForeignKeyConstraint(
            ["actor_user_id"],
            ["user_account.id"],
            name=op.f("fk_risk_warning_entry_actor_user_id_user_account"),
        ),
        sa.ForeignKeyConstraint(["org_id"], ["org.id"], name=op.f("fk_risk_warning_entry_org_id_org")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_risk_warning_entry")),
    )
    op.create_index(op.f("ix_risk_warning_entry_warning_id"), "risk_warning_entry", ["warning_id"])

    op.create_table(
        "risk_task",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("warning_id", sa.Integer(), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("due_at", TS, nullable=True),
        sa.Column("state", _enum("taskstate", "open", "done", length=8), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("done_at", TS, nullable=True),
        sa.Column("done_by", sa.String(length=64), nullable=False),
        sa.Column("result", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["warning_id"],
            ["risk_warning.id"],
            ondelete="CASCADE",
            name=op.f("fk_risk_task_warning_id_risk_warning"),
        ),
        sa.ForeignKeyConstraint(["org_id"], ["org.id"], name=op.f("fk_risk_task_org_id_org")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_risk_task")),
    )
    op.create_index(op.f("ix_risk_task_warning_id"), "risk_task", ["warning_id"])
    op.create_index(op.f("ix_risk_task_org_id"), "risk_task", ["org_id"])

    op.create_table(
        "risk_data_row",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("rule_id", sa.Integer(), nullable=False),
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("data_version", sa.Integer(), nullable=False),
        sa.Column("row_hash", sa.String(length=64), nullable=False),
        sa.Column("values", sa.Text(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["rule_id"], ["risk_rule.id"], ondelete="CASCADE", name=op.f("fk_risk_data_row_rule_id_risk_rule")
        ),
        sa.ForeignKeyConstraint(
            ["dataset_id"], ["dataset.id"], name=op.f("fk_risk_data_row_dataset_id_dataset")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_risk_data_row")),
        sa.UniqueConstraint(
            "rule_id", "dataset_id", "data_version", "row_hash", name="uq_risk_data_row_rule_version_hash"
        ),
    )

    op.create_table(
        "risk_subject",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("key", sa.String(length=32), nullable=False),
        sa.Column("source", sa.String(length=8), nullable=False),
        sa.Column("ref_id", sa.Integer(), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_risk_subject")),
        sa.UniqueConstraint("source", "ref_id", "kind", name="uq_risk_subject_source_ref_kind"),
    )
    op.create_index("ix_risk_subject_key_at", "risk_subject", ["kind", "key", "at"])

    op.create_table(
        "risk_cursor",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("last_id", sa.Integer(), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_risk_cursor")),
    )


def downgrade() -> None:
    for table in (
        "risk_cursor",
        "risk_subject",
        "risk_data_row",
        "risk_task",
        "risk_warning_entry",
        "risk_evidence",
        "risk_warning",
        "risk_rule",
    ):
        op.drop_table(table)
