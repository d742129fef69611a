"""faster event intake (issue 3 benchmark): the audit log becomes parallel hash chains

`audit_record.chain` says which chain a record links into (existing records: chain 0, the
one chain they always formed); `ix_audit_record_chain_id` finds a chain's head. Plain
ADD/DROP COLUMN, not batch mode: rebuilding the table on SQLite would drop the append-only
triggers.

Revision ID: c0c5a0000005
Revises: c0c4f0000004
Create Date: 2026-11-25 12:14:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "c0c5a0000005"
down_revision: str | None = "c0c4f0000004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("audit_record", sa.Column("chain", sa.Integer(), nullable=False, server_default="0"))
    op.create_index("ix_audit_record_chain_id", "audit_record", ["chain", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_audit_record_chain_id", table_name="audit_record")
    op.execute("ALTER TABLE audit_record DROP COLUMN chain")
