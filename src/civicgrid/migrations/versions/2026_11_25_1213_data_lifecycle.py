"""data platform lifecycle: retention and destruction (issue 4 part 10)

Revision ID: c0c4f0000004
Revises: c0c3e0000003
Create Date: 2026-11-25 12:13:00
"""

from collections.abc import Sequence

revision: str = "c0c4f0000004"
down_revision: str | None = "c0c3e0000003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
