"""disputes and mediation (issue 6 part A)

Revision ID: c0c2d0000002
Revises: c0c1a0000001
Create Date: 2026-11-25 12:11:00
"""

from collections.abc import Sequence

revision: str = "c0c2d0000002"
down_revision: str | None = "c0c1a0000001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
