"""intake: index open events by (category, lat, lon, reported_at) for the duplicate search

Every report looks for open events of its category near its point in its time window. By
(category_id, reported_at) that read every open event of the category in the window — on a
busy category thousands of rows for the few nearby, and a quarter of intake's PostgreSQL time
in the benchmark. This index finds the thin band of latitude and checks the longitude and the
time in the index; it holds open events only.

Revision ID: c0c7d0000007
Revises: c0c6b0000006
Create Date: 2026-12-06 04:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "c0c7d0000007"
down_revision: str | None = "c0c6b0000006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OPEN = "state IN ('reported', 'accepted', 'dispatched', 'handling', 'handled', 'suspended')"


def upgrade() -> None:
    op.create_index(
        "ix_event_open_near",
        "event",
        ["category_id", "lat", "lon", "reported_at"],
        unique=False,
        postgresql_where=sa.text(OPEN),
        sqlite_where=sa.text(OPEN),
    )


def downgrade() -> None:
    op.drop_index("ix_event_open_near", table_name="event")
