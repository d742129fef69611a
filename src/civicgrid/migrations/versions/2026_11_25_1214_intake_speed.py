"""faster event intake (issue 3 benchmark)

Revision ID: c0c5a0000005
Revises: c0c4f0000004
Create Date: 2026-11-25 12:14:00
"""

from collections.abc import Sequence

revision: str = "c0c5a0000005"
down_revision: str | None = "c0c4f0000004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
