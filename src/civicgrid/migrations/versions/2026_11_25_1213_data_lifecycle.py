"""data platform lifecycle: retention and destruction (issue 4 part 10)

Revision ID: c0c4f0000004
Revises: c0c3e0000003
Create Date: 2026-11-25 12:13:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "c0c4f0000004"
down_revision: str | None = "c0c3e0000003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OPEN = "state IN ('requested', 'approved')"


def upgrade() -> None:
    with op.batch_alter_table("data_destruction", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("scope", sa.String(length=16), nullable=False, server_default="dataset")
        )
        batch_op.add_column(sa.Column("versions", sa.Text(), nullable=False, server_default="[]"))
        batch_op.add_column(sa.Column("origin", sa.String(length=16), nullable=False, server_default="user"))
        batch_op.add_column(sa.Column("decision_reason", sa.Text(), nullable=False, server_default=""))
    # At most one open destruction request per dataset (the retention job may run on several workers).
    op.create_index(
        "uq_data_destruction_open",
        "data_destruction",
        ["dataset_id"],
        unique=True,
        postgresql_where=sa.text(OPEN),
        sqlite_where=sa.text(OPEN),
    )


def downgrade() -> None:
    op.drop_index("uq_data_destruction_open", table_name="data_destruction")
    with op.batch_alter_table("data_destruction", schema=None) as batch_op:
        batch_op.drop_column("decision_reason")
        batch_op.drop_column("origin")
        batch_op.drop_column("versions")
        batch_op.drop_column("scope")
