"""event statistics: covering indexes for the stats API (docs/metrics.md, docs/benchmarks-events.md)

One family leads with the time column (the whole jurisdiction, a county), the other with the
township (a township, village or grid); hand-backs read the timeline by (action, at).

Revision ID: 5e7a1c2d9b40
Revises: fcb3777f700f
Create Date: 2026-11-25 09:40:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "5e7a1c2d9b40"
down_revision: str | None = "fcb3777f700f"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The columns every cohort row reads first: SQLite decodes a record only up to the last one it needs.
COHORT = ["state", "closed_on_time", "rating", "handling_hours", "rework_count", "level", "handle_due_at"]
GROUPS = ["village_id", "grid_id", "platform", "category_id", "lead_org_id"]
SCOPE = ["village_id", "grid_id", "platform", "category_id"]
INDEXES = {
    "ix_event_stats_accepted": ["accepted_at", *COHORT, "county_id", "township_id", *GROUPS],
    "ix_event_stats_town_accepted": ["township_id", "accepted_at", *COHORT, *GROUPS],
    # the id last: the scope's event ids come from the index alone (hand-backs' semi-join)
    "ix_event_stats_reported": ["reported_at", "state", "county_id", "township_id", *SCOPE, "id"],
    "ix_event_stats_town_reported": ["township_id", "reported_at", "state", *SCOPE, "id"],
    "ix_event_stats_closed": ["closed_at", "county_id", "township_id", *SCOPE],
    "ix_event_stats_due": ["handle_due_at", "state", "handled_at", "county_id", "township_id", *SCOPE],
}


def upgrade() -> None:
    for name, columns in INDEXES.items():
        op.create_index(name, "event", columns, unique=False)
    op.create_index(
        "ix_event_timeline_action_at", "event_timeline", ["action", "at", "org_id", "event_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_event_timeline_action_at", table_name="event_timeline")
    for name in reversed(INDEXES):
        op.drop_index(name, table_name="event")
