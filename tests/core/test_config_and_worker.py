from datetime import timedelta

from sqlalchemy import select

from civicgrid.accounts.models import LoginFailure, WebSession
from civicgrid.accounts.service import authenticate, start_web_session
from civicgrid.core.config import Settings
from civicgrid.core.db import utcnow
from civicgrid.worker import jobs, run_due
from tests.factories import make_tree, make_users


def test_signing_secret_generated_once_and_private(tmp_path):
    s = Settings(data_dir=tmp_path / "d")
    first = s.secret_key
    assert len(first) >= 40
    assert Settings(data_dir=tmp_path / "d").secret_key == first
    assert (tmp_path / "d" / "secret.key").stat().st_mode & 0o077 == 0
    assert Settings(data_dir=tmp_path / "other").secret_key != first


def test_worker_purges_expired_sessions_and_old_failures_idempotently(db):
    with db.session() as s:
        t = make_users(s, make_tree(s))
        start_web_session(s, t.users["leader"])
        start_web_session(s, t.users["handler"])
        authenticate(s, "leader", "wrong")
    with db.session() as s:
        first = s.scalars(select(WebSession)).first()
        assert first is not None
        first.expires_at = utcnow() - timedelta(minutes=1)
        for f in s.scalars(select(LoginFailure)):
            f.at = utcnow() - timedelta(hours=1)
    last: dict[str, float] = {}
    every = [j.name for j in jobs()]
    assert "accounts.purge_expired" in every and "events.check_deadlines" in every
    assert run_due(db, last, now=1000.0) == every  # at start every job is due
    assert run_due(db, last, now=1001.0) == []  # not due again yet
    with db.session() as s:
        assert len(s.scalars(select(WebSession)).all()) == 1
        assert s.scalars(select(LoginFailure)).all() == []
    assert run_due(db, last, now=5000.0) == every
    with db.session() as s:
        assert len(s.scalars(select(WebSession)).all()) == 1
