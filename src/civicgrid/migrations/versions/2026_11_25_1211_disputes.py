"""disputes and mediation (issue 6 part A)

Revision ID: c0c2d0000002
Revises: c0c1a0000001
Create Date: 2026-11-25 12:11:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "c0c2d0000002"
down_revision: str | None = "c0c1a0000001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "dispute",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("number", sa.String(length=32), nullable=False),
        sa.Column(
            "source",
            sa.Enum("event", "walk_in", "hotline", "referral", name="source", native_enum=False, length=24),
            nullable=False,
        ),
        sa.Column("event_id", sa.Integer(), nullable=True),
        sa.Column(
            "referred_by",
            sa.Enum(
                "court",
                "police",
                "petition",
                "prosecutor",
                name="referringbody",
                native_enum=False,
                length=24,
            ),
            nullable=True,
        ),
        sa.Column("referred_by_name", sa.String(length=200), nullable=False),
        sa.Column("referral_ref", sa.String(length=100), nullable=False),
        sa.Column(
            "type",
            sa.Enum(
                "neighbour",
                "family",
                "land",
                "labour",
                "property",
                "medical",
                "traffic",
                "consumer",
                "requisition",
                "debt",
                "other",
                name="disputetype",
                native_enum=False,
                length=24,
            ),
            nullable=False,
        ),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("amount_cents", sa.BigInteger(), nullable=True),
        sa.Column("address", sa.String(length=300), nullable=False),
        sa.Column("grid_id", sa.Integer(), nullable=False),
        sa.Column("village_id", sa.Integer(), nullable=False),
        sa.Column("township_id", sa.Integer(), nullable=False),
        sa.Column("county_id", sa.Integer(), nullable=False),
        sa.Column("region_path", sa.String(length=255), nullable=False),
        sa.Column(
            "risk",
            sa.Enum("low", "medium", "high", name="risk", native_enum=False, length=24),
            nullable=False,
        ),
        sa.Column("threat_of_violence", sa.Boolean(), nullable=False),
        sa.Column("risk_note", sa.Text(), nullable=False),
        sa.Column("warning_ref", sa.String(length=64), nullable=False),
        sa.Column(
            "complexity",
            sa.Enum("simple", "complex", "difficult", name="complexity", native_enum=False, length=24),
            nullable=True,
        ),
        sa.Column(
            "level",
            sa.Enum("village", "township", "county", name="level", native_enum=False, length=24),
            nullable=False,
        ),
        sa.Column("intake_org_id", sa.Integer(), nullable=False),
        sa.Column("handling_org_id", sa.Integer(), nullable=False),
        sa.Column("leader_user_id", sa.Integer(), nullable=True),
        sa.Column("lead_mediator_id", sa.Integer(), nullable=True),
        sa.Column(
            "state",
            sa.Enum(
                "registered",
                "triaged",
                "mediating",
                "agreed",
                "failed",
                "referred",
                "transferred",
                "closed",
                "withdrawn",
                name="state",
                native_enum=False,
                length=24,
            ),
            nullable=False,
        ),
        sa.Column(
            "outcome",
            sa.Enum(
                "agreement_full",
                "agreement_partial",
                "failed",
                "withdrawn",
                name="outcome",
                native_enum=False,
                length=24,
            ),
            nullable=True,
        ),
        sa.Column("registered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("registered_day", sa.Date(), nullable=False),
        sa.Column("concluded_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "resolved_level",
            sa.Enum("village", "township", "county", name="level", native_enum=False, length=24),
            nullable=True,
        ),
        sa.Column("duration_days", sa.Float(), nullable=True),
        sa.Column("level_up_count", sa.Integer(), nullable=False),
        sa.Column("level_down_count", sa.Integer(), nullable=False),
        sa.Column("reopen_count", sa.Integer(), nullable=False),
        sa.Column("agreement_no", sa.Integer(), nullable=False),
        sa.Column("agreement_facts", sa.Text(), nullable=False),
        sa.Column("agreement_terms", sa.Text(), nullable=False),
        sa.Column("performance_deadline", sa.Date(), nullable=True),
        sa.Column("agreed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sealed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("seal_ref", sa.String(length=100), nullable=False),
        sa.Column("sealed_sha256", sa.String(length=64), nullable=False),
        sa.Column("failure_reason", sa.Text(), nullable=False),
        sa.Column(
            "referral_target",
            sa.Enum(
                "court",
                "arbitration",
                "petition",
                "police",
                name="referraltarget",
                native_enum=False,
                length=24,
            ),
            nullable=True,
        ),
        sa.Column("referral_body", sa.String(length=200), nullable=False),
        sa.Column("referred_on", sa.Date(), nullable=True),
        sa.Column("referral_accepted_on", sa.Date(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["county_id"], ["region.id"], name=op.f("fk_dispute_county_id_region")),
        sa.ForeignKeyConstraint(["event_id"], ["event.id"], name=op.f("fk_dispute_event_id_event")),
        sa.ForeignKeyConstraint(["grid_id"], ["region.id"], name=op.f("fk_dispute_grid_id_region")),
        sa.ForeignKeyConstraint(["handling_org_id"], ["org.id"], name=op.f("fk_dispute_handling_org_id_org")),
        sa.ForeignKeyConstraint(["intake_org_id"], ["org.id"], name=op.f("fk_dispute_intake_org_id_org")),
        sa.ForeignKeyConstraint(
            ["lead_mediator_id"], ["user_account.id"], name=op.f("fk_dispute_lead_mediator_id_user_account")
        ),
        sa.ForeignKeyConstraint(
            ["leader_user_id"], ["user_account.id"], name=op.f("fk_dispute_leader_user_id_user_account")
        ),
        sa.ForeignKeyConstraint(["township_id"], ["region.id"], name=op.f("fk_dispute_township_id_region")),
        sa.ForeignKeyConstraint(["village_id"], ["region.id"], name=op.f("fk_dispute_village_id_region")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dispute")),
        sa.UniqueConstraint("event_id", name=op.f("uq_dispute_event_id")),
        sa.UniqueConstraint("number", name=op.f("uq_dispute_number")),
    )
    with op.batch_alter_table("dispute", schema=None) as batch_op:
        batch_op.create_index("ix_dispute_county_day", ["county_id", "registered_day"], unique=False)
        batch_op.create_index(batch_op.f("ix_dispute_grid_id"), ["grid_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_dispute_handling_org_id"), ["handling_org_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_dispute_intake_org_id"), ["intake_org_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_dispute_lead_mediator_id"), ["lead_mediator_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_dispute_region_path"), ["region_path"], unique=False)
        batch_op.create_index(batch_op.f("ix_dispute_state"), ["state"], unique=False)
        batch_op.create_index("ix_dispute_state_level", ["state", "level"], unique=False)
        batch_op.create_index("ix_dispute_township_day", ["township_id", "registered_day"], unique=False)

    op.create_table(
        "dispute_follow_up",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("dispute_id", sa.Integer(), nullable=False),
        sa.Column("agreement_no", sa.Integer(), nullable=False),
        sa.Column(
            "kind", sa.Enum("day7", "day30", name="followupkind", native_enum=False, length=8), nullable=False
        ),
        sa.Column("due_on", sa.Date(), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("done_by", sa.Integer(), nullable=True),
        sa.Column(
            "satisfaction",
            sa.Enum(
                "satisfied", "basically", "dissatisfied", name="satisfaction", native_enum=False, length=24
            ),
            nullable=True,
        ),
        sa.Column(
            "performance",
            sa.Enum("performed", "performing", "breached", name="performance", native_enum=False, length=24),
            nullable=True,
        ),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("cancelled", sa.Boolean(), nullable=False),
        sa.Column("notices", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["dispute_id"],
            ["dispute.id"],
            name=op.f("fk_dispute_follow_up_dispute_id_dispute"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["done_by"], ["user_account.id"], name=op.f("fk_dispute_follow_up_done_by_user_account")
        ),
        sa.ForeignKeyConstraint(["org_id"], ["org.id"], name=op.f("fk_dispute_follow_up_org_id_org")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dispute_follow_up")),
        sa.UniqueConstraint(
            "dispute_id", "agreement_no", "kind", name="uq_dispute_follow_up_dispute_no_kind"
        ),
    )
    with op.batch_alter_table("dispute_follow_up", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_dispute_follow_up_dispute_id"), ["dispute_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_dispute_follow_up_org_id"), ["org_id"], unique=False)
        batch_op.create_index(
            "ix_dispute_follow_up_pending", ["done_at", "cancelled", "due_on"], unique=False
        )

    op.create_table(
        "dispute_mediator",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("dispute_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("assigned_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("released_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["dispute_id"],
            ["dispute.id"],
            name=op.f("fk_dispute_mediator_dispute_id_dispute"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(["org_id"], ["org.id"], name=op.f("fk_dispute_mediator_org_id_org")),
        sa.ForeignKeyConstraint(
            ["user_id"], ["user_account.id"], name=op.f("fk_dispute_mediator_user_id_user_account")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dispute_mediator")),
    )
    with op.batch_alter_table("dispute_mediator", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_dispute_mediator_dispute_id"), ["dispute_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_dispute_mediator_user_id"), ["user_id"], unique=False)

    op.create_table(
        "dispute_party",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("dispute_id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column(
            "role",
            sa.Enum("applicant", "respondent", "third_party", name="partyrole", native_enum=False, length=24),
            nullable=False,
        ),
        sa.Column(
            "kind", sa.Enum("person", "org", name="partykind", native_enum=False, length=24), nullable=False
        ),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("id_number", sa.String(length=32), nullable=False),
        sa.Column("phone", sa.String(length=32), nullable=False),
        sa.Column("address", sa.String(length=300), nullable=False),
        sa.Column("representative", sa.String(length=100), nullable=False),
        sa.Column("confirmed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("confirmed_agreement_no", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["dispute_id"],
            ["dispute.id"],
            name=op.f("fk_dispute_party_dispute_id_dispute"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dispute_party")),
        sa.UniqueConstraint("dispute_id", "seq", name="uq_dispute_party_dispute_seq"),
    )
    with op.batch_alter_table("dispute_party", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_dispute_party_dispute_id"), ["dispute_id"], unique=False)

    op.create_table(
        "dispute_round",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("dispute_id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("held_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("place", sa.String(length=200), nullable=False),
        sa.Column("attendees", sa.Text(), nullable=False),
        sa.Column("minutes", sa.Text(), nullable=False),
        sa.Column(
            "outcome",
            sa.Enum(
                "progress",
                "agreement",
                "no_agreement",
                "adjourned",
                name="roundoutcome",
                native_enum=False,
                length=24,
            ),
            nullable=False,
        ),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("recorded_by", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["dispute_id"],
            ["dispute.id"],
            name=op.f("fk_dispute_round_dispute_id_dispute"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(["org_id"], ["org.id"], name=op.f("fk_dispute_round_org_id_org")),
        sa.ForeignKeyConstraint(
            ["recorded_by"], ["user_account.id"], name=op.f("fk_dispute_round_recorded_by_user_account")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dispute_round")),
        sa.UniqueConstraint("dispute_id", "seq", name="uq_dispute_round_dispute_seq"),
    )
    with op.batch_alter_table("dispute_round", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_dispute_round_dispute_id"), ["dispute_id"], unique=False)

    op.create_table(
        "dispute_timeline",
        sa.Column("dispute_id", sa.Integer(), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor_user_id", sa.Integer(), nullable=True),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=True),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("from_state", sa.String(length=16), nullable=True),
        sa.Column("to_state", sa.String(length=16), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["actor_user_id"],
            ["user_account.id"],
            name=op.f("fk_dispute_timeline_actor_user_id_user_account"),
        ),
        sa.ForeignKeyConstraint(
            ["dispute_id"], ["dispute.id"], name=op.f("fk_dispute_timeline_dispute_id_dispute")
        ),
        sa.ForeignKeyConstraint(["org_id"], ["org.id"], name=op.f("fk_dispute_timeline_org_id_org")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dispute_timeline")),
        sa.UniqueConstraint("dispute_id", "seq", name="uq_dispute_timeline_dispute_seq"),
    )
    with op.batch_alter_table("dispute_timeline", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_dispute_timeline_dispute_id"), ["dispute_id"], unique=False)

    # The timeline is append-only, as event_timeline: the database refuses UPDATE and DELETE.
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION dispute_timeline_append_only() RETURNS trigger AS $$ "
            "BEGIN RAISE EXCEPTION 'dispute_timeline is append-only'; END $$ LANGUAGE plpgsql"
        )
        op.execute(
            "CREATE TRIGGER dispute_timeline_no_change BEFORE UPDATE OR DELETE ON dispute_timeline "
            "FOR EACH ROW EXECUTE FUNCTION dispute_timeline_append_only()"
        )
    else:
        for verb in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER dispute_timeline_no_{verb.lower()} BEFORE {verb} ON dispute_timeline "
                "BEGIN SELECT RAISE(ABORT, 'dispute_timeline is append-only'); END"
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER dispute_timeline_no_change ON dispute_timeline")
        op.execute("DROP FUNCTION dispute_timeline_append_only()")
    else:
        op.execute("DROP TRIGGER dispute_timeline_no_update")
        op.execute("DROP TRIGGER dispute_timeline_no_delete")
    with op.batch_alter_table("dispute_timeline", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_dispute_timeline_dispute_id"))

    op.drop_table("dispute_timeline")
    with op.batch_alter_table("dispute_round", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_dispute_round_dispute_id"))

    op.drop_table("dispute_round")
    with op.batch_alter_table("dispute_party", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_dispute_party_dispute_id"))

    op.drop_table("dispute_party")
    with op.batch_alter_table("dispute_mediator", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_dispute_mediator_user_id"))
        batch_op.drop_index(batch_op.f("ix_dispute_mediator_dispute_id"))

    op.drop_table("dispute_mediator")
    with op.batch_alter_table("dispute_follow_up", schema=None) as batch_op:
        batch_op.drop_index("ix_dispute_follow_up_pending")
        batch_op.drop_index(batch_op.f("ix_dispute_follow_up_org_id"))
        batch_op.drop_index(batch_op.f("ix_dispute_follow_up_dispute_id"))

    op.drop_table("dispute_follow_up")
    with op.batch_alter_table("dispute", schema=None) as batch_op:
        batch_op.drop_index("ix_dispute_township_day")
        batch_op.drop_index("ix_dispute_state_level")
        batch_op.drop_index(batch_op.f("ix_dispute_state"))
        batch_op.drop_index(batch_op.f("ix_dispute_region_path"))
        batch_op.drop_index(batch_op.f("ix_dispute_lead_mediator_id"))
        batch_op.drop_index(batch_op.f("ix_dispute_intake_org_id"))
        batch_op.drop_index(batch_op.f("ix_dispute_handling_org_id"))
        batch_op.drop_index(batch_op.f("ix_dispute_grid_id"))
        batch_op.drop_index("ix_dispute_county_day")

    op.drop_table("dispute")
