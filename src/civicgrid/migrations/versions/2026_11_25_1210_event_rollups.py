"""event rollups for the cockpit (issue 5)

Revision ID: c0c1a0000001
Revises: 5e7a1c2d9b40
Create Date: 2026-11-25 12:10:00
"""

from collections.abc import Sequence

revision: str = "c0c1a0000001"
down_revision: str | None = "5e7a1c2d9b40"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
