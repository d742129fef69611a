from __future__ import annotations

import json

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from civicgrid.core import audit
from civicgrid.core.audit import AuditRecord
from tests.factories import ROLE_HOME, make_tree, make_users


def _tamper(db, sql: str) -> None:
    """What an attacker with database rights would do: bypass the append-only trigger."""
    with db.engine.begin() as c:
        if db.engine.dialect.name == "postgresql":
            c.execute(text("ALTER TABLE audit_record DISABLE TRIGGER audit_record_no_change"))
            c.execute(text(sql))
            c.execute(text("ALTER TABLE audit_record ENABLE TRIGGER audit_record_no_change"))
        else:
            c.execute(text("DROP TRIGGER audit_record_no_update"))
            c.execute(text("DROP TRIGGER audit_record_no_delete"))
            c.execute(text(sql))


def test_every_write_is_audited_with_personal_fields_masked(db) -> None:
    with db.session() as s:
        make_users(s, make_tree(s))
    with db.session() as s:
        recs = s.query(AuditRecord).filter(AuditRecord.action == "user.create").all()
        assert len(recs) == len(ROLE_HOME)  # one user per role
        diff = json.loads(recs[0].diff)
        assert diff["phone"] == [None, "138****5678"]
        assert diff["display_name"] == [None, "张*"]
        assert "13812345678" not in recs[0].diff and "password" not in recs[0].diff
        assert audit.verify(s) == []


def test_database_refuses_to_change_audit_rows(db) -> None:
    with db.session() as s:
        make_tree(s)
    with pytest.raises(Exception, match="append-only"), db.engine.begin() as c:
        c.execute(text("UPDATE audit_record SET action = 'x'"))
    with pytest.raises(Exception, match="append-only"), db.engine.begin() as c:
        c.execute(text("DELETE FROM audit_record"))


@pytest.mark.parametrize(
    "sql,reason",
    [
        ("UPDATE audit_record SET diff = '{}' WHERE id = 3", "content"),
        ("DELETE FROM audit_record WHERE id = 3", "link"),
    ],
)
def test_tampering_is_detected_and_named(db, monkeypatch, sql, reason) -> None:
    with db.session() as s:
        make_tree(s)
    _tamper(db, sql)
    with db.session() as s:
        breaks = audit.verify(s)
    assert [(b.record_id, b.reason) for b in breaks] == [(3 if reason == "content" else 4, reason)]

    from civicgrid.cli import app
    from civicgrid.core.config import get_settings

    monkeypatch.setenv("CIVICGRID_DATABASE_URL", db.url)
    get_settings.cache_clear()
    try:
        res = CliRunner().invoke(app, ["audit", "verify"])
    finally:
        get_settings.cache_clear()
    assert res.exit_code == 1
    assert f"record {3 if reason == 'content' else 4}" in res.output


def test_verify_passes_on_untouched_chain_via_api(client, db) -> None:
    from tests.factories import login_headers

    with db.session() as s:
        make_users(s, make_tree(s))
    admin = login_headers(client, "admin")
    res = client.post("/api/v1/audit/verify", headers=admin)
    assert res.json() == {"intact": True, "breaks": []}
    page = client.get("/api/v1/audit", headers=admin, params={"action": "user.create", "size": 3}).json()
    assert page["total"] == len(ROLE_HOME) and len(page["items"]) == 3
