"""event rollups for the cockpit (issue 5)

`event_rollup`: counters per fact × cube × grain × local day × region × category × platform ×
lead org × state (events/rollups.py, docs/decisions-rollups.md), clustered by its key (WITHOUT
ROWID on SQLite). `ix_event_open`: the open events only, for the clock-dependent numbers.
Existing events are rolled up at once.

Revision ID: c0c1a0000001
Revises: 5e7a1c2d9b40
Create Date: 2026-11-25 12:10:00
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "c0c1a0000001"
down_revision: str | None = "5e7a1c2d9b40"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEYS: list[tuple[str, sa.types.TypeEngine[Any]]] = [
    ("fact", sa.String(1)),
    ("cube", sa.String(1)),
    ("grain", sa.String(1)),
    ("day", sa.Date()),
    ("county_id", sa.Integer()),
    ("township_id", sa.Integer()),
    ("village_id", sa.Integer()),
    ("grid_id", sa.Integer()),
    ("category_id", sa.Integer()),
    ("platform", sa.String(16)),
    ("org_id", sa.Integer()),
    ("state", sa.String(16)),
    ("since", sa.Date()),
]
COUNTERS = ["n", "closed", "closed_on_time", "reworked", "rated", "satisfied", "resolved_locally", "hours_n"]
OPEN = "state IN ('reported', 'accepted', 'dispatched', 'handling', 'handled', 'verified', 'suspended')"
OPEN_COLUMNS = [
    "township_id",
    "state",
    "handle_due_at",
    "accepted_at",
    "handled_at",
    "county_id",
    "village_id",
    "grid_id",
    "platform",
    "category_id",
    "lead_org_id",
]


def upgrade() -> None:
    op.create_table(
        "event_rollup",
        *[sa.Column(name, type_, nullable=False) for name, type_ in KEYS],
        *[sa.Column(name, sa.Integer(), nullable=False) for name in COUNTERS],
        sa.Column("hours_cs", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(*[name for name, _ in KEYS], name="pk_event_rollup"),
        sqlite_with_rowid=False,
    )
    op.create_index(
        "ix_event_rollup_township",
        "event_rollup",
        ["fact", "cube", "township_id", "grain", "day"],
        unique=False,
    )
    op.create_index(
        "ix_event_open",
        "event",
        OPEN_COLUMNS,
        unique=False,
        postgresql_where=sa.text(OPEN),
        sqlite_where=sa.text(OPEN),
    )
    bind = op.get_bind()
    if bind.execute(sa.text("SELECT 1 FROM event LIMIT 1")).first() is not None:
        from sqlalchemy.orm import Session

        from civicgrid.events import rollups

        rollups.rebuild(Session(bind=bind))


def downgrade() -> None:
    op.drop_index("ix_event_open", table_name="event")
    op.drop_index("ix_event_rollup_township", table_name="event_rollup")
    op.drop_table("event_rollup")
