"""audit log is append-only: the database refuses UPDATE and DELETE on audit_record

Revision ID: a1d1t0a0001
Revises: 40174782fbeb
Create Date: 2026-11-25 08:50:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "a1d1t0a0001"
down_revision: str | None = "40174782fbeb"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            """
            CREATE FUNCTION audit_record_append_only() RETURNS trigger AS $$
            BEGIN RAISE EXCEPTION 'audit_record is append-only'; END $$ LANGUAGE plpgsql
            """
        )
        op.execute(
            "CREATE TRIGGER audit_record_no_change BEFORE UPDATE OR DELETE ON audit_record "
            "FOR EACH ROW EXECUTE FUNCTION audit_record_append_only()"
        )
    else:
        for verb in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER audit_record_no_{verb.lower()} BEFORE {verb} ON audit_record "
                "BEGIN SELECT RAISE(ABORT, 'audit_record is append-only'); END"
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER audit_record_no_change ON audit_record")
        op.execute("DROP FUNCTION audit_record_append_only()")
    else:
        op.execute("DROP TRIGGER audit_record_no_update")
        op.execute("DROP TRIGGER audit_record_no_delete")
