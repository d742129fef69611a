"""risk rules and warnings (issue 6 part B)

Revision ID: c0c3e0000003
Revises: c0c2d0000002
Create Date: 2026-11-25 12:12:00
"""

from collections.abc import Sequence

revision: str = "c0c3e0000003"
down_revision: str | None = "c0c2d0000002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
