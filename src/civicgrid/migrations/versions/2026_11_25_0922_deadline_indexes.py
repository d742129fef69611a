"""deadline indexes: per stage, the due time of its open events without an overdue notice yet

The deadline worker reads each stage's candidates through these small partial indexes, so
finished events and notified backlog are never read (docs/decisions-deadlines.md). The
predicates are spelled exactly as in events/models.py (deadline_pending_predicate).

Revision ID: 129376daec6e
Revises: f24e496107f9
Create Date: 2026-11-25 09:22:26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "129376daec6e"
down_revision: str | None = "f24e496107f9"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STAGES = (
    ("accept", "accept_due_at", "'reported'"),
    ("handle", "handle_due_at", "'dispatched', 'handling'"),
    ("verify", "verify_due_at", "'handled'"),
)


def upgrade() -> None:
    for stage, due, states in STAGES:
        where = sa.text(f"state IN ({states}) AND notices NOT LIKE '%{stage}:overdue%'")
        op.create_index(
            f"ix_event_{stage}_due_pending",
            "event",
            [due, "id"],
            unique=False,
            postgresql_where=where,
            sqlite_where=where,
        )


def downgrade() -> None:
    for stage, _due, _states in STAGES:
        op.drop_index(f"ix_event_{stage}_due_pending", table_name="event")
