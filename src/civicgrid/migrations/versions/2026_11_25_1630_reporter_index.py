"""cockpit at 10 M events: index event (reporter, reported_at, grid) and the not-done deadlines

The cockpit's grid-worker panels (reports per worker per week, grids without a patrol report in
7 days) read each worker's recent reports; with this index they touch only those index entries
(covering) instead of every event of the region in the period. It replaces the single-column
reporter index, which it covers ("my reports" uses it too).

`ix_event_not_done_due`: events still being handled (dispatched, handling) in deadline order, so
the overdue and due-soon lists stop after their first rows.

Revision ID: c0c6b0000006
Revises: c0c5a0000005
Create Date: 2026-11-25 16:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "c0c6b0000006"
down_revision: str | None = "c0c5a0000005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NOT_DONE = "state IN ('dispatched', 'handling')"


def upgrade() -> None:
    op.create_index(
        "ix_event_reporter_reported", "event", ["reporter_user_id", "reported_at", "grid_id"], unique=False
    )
    op.drop_index("ix_event_reporter_user_id", table_name="event")
    op.create_index(
        "ix_event_not_done_due",
        "event",
        ["handle_due_at", "id", "county_id", "township_id", "village_id", "grid_id"],
        unique=False,
        postgresql_where=sa.text(NOT_DONE),
        sqlite_where=sa.text(NOT_DONE),
    )


def downgrade() -> None:
    op.drop_index("ix_event_not_done_due", table_name="event")
    op.create_index("ix_event_reporter_user_id", "event", ["reporter_user_id"], unique=False)
    op.drop_index("ix_event_reporter_reported", table_name="event")
