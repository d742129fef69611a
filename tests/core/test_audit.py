from __future__ import annotations

import json

import pytest
from sqlalchemy import select, text
from typer.testing import CliRunner

from civicgrid.core import audit
from civicgrid.core.audit import AuditRecord
from civicgrid.core.auth import SYSTEM
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


def _postgresql_only(db) -> None:
    if db.engine.dialect.name != "postgresql":
        pytest.skip("parallel chains exist on PostgreSQL only (SQLite serialises writers)")


def _chains(db) -> dict[str, tuple[int, int]]:
    with db.session() as s:
        rows = s.scalars(select(AuditRecord).where(AuditRecord.target_type == "x")).all()
        return {r.target_id: (r.chain, r.id) for r in rows}


def test_writers_do_not_queue_behind_each_other_and_every_chain_verifies(db) -> None:
    """A transaction that has audited something and not yet committed does not hold up the
    next writer (it did when the log was one chain), and tampering is still named."""
    _postgresql_only(db)
    with db.session() as s:
        make_tree(s)
    first = db.sessionmaker()
    try:
        audit.record(first, SYSTEM, "test.first", "x", 1)
        with db.session() as second:
            second.execute(text("SET LOCAL lock_timeout = '2s'"))
            audit.record(second, SYSTEM, "test.second", "x", 2)
        audit.record(first, SYSTEM, "test.first", "x", 3)
        first.commit()
    finally:
        first.close()
    chains = _chains(db)
    assert chains["1"][0] == chains["3"][0] != chains["2"][0]
    with db.session() as s:
        assert audit.verify(s) == []
    # deleting a record breaks the link of the next record of *its* chain, not of another
    _tamper(db, f"DELETE FROM audit_record WHERE id = {chains['1'][1]}")
    _tamper(db, f"UPDATE audit_record SET action = 'forged' WHERE id = {chains['2'][1]}")
    with db.session() as s:
        breaks = [(b.record_id, b.reason) for b in audit.verify(s)]
    assert breaks == sorted([(chains["3"][1], "link"), (chains["2"][1], "content")])


def test_a_rolled_back_savepoint_does_not_free_the_chain(db) -> None:
    """The chain's lock is taken again for each record, so a savepoint that rolled back (and
    released the lock it took) cannot let another writer link to the same predecessor."""
    _postgresql_only(db)
    with db.session() as s:
        make_tree(s)
    s = db.sessionmaker()
    try:
        savepoint = s.begin_nested()
        audit.record(s, SYSTEM, "test.rolled_back", "x", 1)
        savepoint.rollback()
        rec = audit.record(s, SYSTEM, "test.kept", "x", 2)
        with db.engine.connect() as other:
            taken = other.execute(
                text("SELECT pg_try_advisory_lock(:k, :c)"), {"k": audit.LOCK_KEY, "c": rec.chain}
            ).scalar()
            assert taken is False
        s.commit()
    finally:
        s.close()
    assert set(_chains(db)) == {"2"}
    with db.session() as s:
        assert audit.verify(s) == []
