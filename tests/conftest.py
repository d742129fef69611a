"""Database fixtures: every database test runs on SQLite and, where configured, PostgreSQL.

CI sets CIVICGRID_TEST_PG (a server URL); each test run creates a database of its own there
and drops it at the end, so runs never see each other's rows. On a laptop without it the
PostgreSQL half is skipped; in CI (CI=true) its absence is an error.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

_TMP = Path(tempfile.mkdtemp(prefix="civicgrid-test-"))
# A data dir per process: xdist workers inherit the controller's environment, and a dir set by
# the controller (not by whoever ran pytest) must not be shared by the workers' tests.
if os.environ.get("CIVICGRID_TEST_OWN_DATA_DIR") or "CIVICGRID_DATA_DIR" not in os.environ:
    os.environ["CIVICGRID_DATA_DIR"] = str(_TMP / "data")
    os.environ["CIVICGRID_TEST_OWN_DATA_DIR"] = "1"
os.environ["CIVICGRID_EMBEDDED_WORKER"] = "false"
os.environ["CIVICGRID_TEST_CHEAP_PASSWORD_HASHES"] = "1"  # core/security.py: argon2 at 1 ms, not 100

from civicgrid.core.config import Settings  # noqa: E402
from civicgrid.core.db import Base, Database  # noqa: E402
from civicgrid.core.migrate import upgrade  # noqa: E402
from civicgrid.models import load_all  # noqa: E402

load_all()
PG_URL = os.environ.get("CIVICGRID_TEST_PG", "")
BACKENDS = ["sqlite", "postgresql"]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(_TMP, ignore_errors=True)


class _Backend:
    """A migrated database per backend per test process, reset between tests."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.admin_url = ""
        self.name = ""
        if kind == "sqlite":
            self.template = _TMP / f"template-{uuid.uuid4().hex}.db"
            upgrade(f"sqlite:///{self.template}")
            self.url = ""
        else:
            base = make_url(PG_URL.replace("postgresql://", "postgresql+psycopg://", 1))
            self.name = f"cg_test_{uuid.uuid4().hex[:12]}"
            self.admin_url = base.render_as_string(hide_password=False)
            eng = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
            with eng.connect() as c:
                c.execute(text(f'CREATE DATABASE "{self.name}"'))
            eng.dispose()
            self.url = base.set(database=self.name).render_as_string(hide_password=False)
            upgrade(self.url)
            self.tables = [t.name for t in Base.metadata.sorted_tables]

    def fresh(self, tmp: Path) -> Database:
        if self.kind == "sqlite":
            path = tmp / "civicgrid.db"
            shutil.copyfile(self.template, path)
            return Database(f"sqlite:///{path}")
        db = Database(self.url)
        with db.engine.begin() as c:
            c.execute(
                text("TRUNCATE " + ", ".join(f'"{t}"' for t in self.tables) + " RESTART IDENTITY CASCADE")
            )
        return db

    def drop(self) -> None:
        if self.kind == "postgresql":
            eng = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
            with eng.connect() as c:
                c.execute(text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
            eng.dispose()


_backends: dict[str, _Backend] = {}


@pytest.fixture(scope="session")
def _backend_registry() -> Iterator[dict[str, _Backend]]:
    yield _backends
    for b in _backends.values():
        b.drop()


@pytest.fixture(params=BACKENDS)
def db(
    request: pytest.FixtureRequest, tmp_path: Path, _backend_registry: dict[str, _Backend]
) -> Iterator[Database]:
    """A migrated, empty database: SQLite and PostgreSQL."""
    kind = request.param
    if kind == "postgresql" and not PG_URL:
        if os.environ.get("CI"):
            pytest.fail("CIVICGRID_TEST_PG is not set in CI: the PostgreSQL half of the suite cannot run")
        pytest.skip("CIVICGRID_TEST_PG unset: PostgreSQL tests run only where it is configured")
    if kind not in _backend_registry:
        _backend_registry[kind] = _Backend(kind)
    database = _backend_registry[kind].fresh(tmp_path)
    yield database
    _no_connection_left(database, request.node.nodeid)
    database.dispose()


def _no_connection_left(database: Database, test: str) -> None:
    """A connection still checked out after a test is a session nobody closed: on PostgreSQL it
    sits "idle in transaction" holding its locks, and the next test's TRUNCATE waits for ever.
    Name the test that leaked it (a thread it started gets a moment to finish first)."""
    deadline = time.monotonic() + 5
    while database.engine.pool.checkedout() and time.monotonic() < deadline:  # type: ignore[attr-defined]
        time.sleep(0.05)
    left = database.engine.pool.checkedout()  # type: ignore[attr-defined]
    if left:
        pytest.fail(f"{test} left {left} database connection(s) checked out (an unclosed session)")


@pytest.fixture
def session(db: Database) -> Iterator[Session]:
    s = db.sessionmaker()
    try:
        yield s
    finally:
        s.rollback()
        s.close()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data")


@pytest.fixture
def app(settings: Settings, db: Database):  # type: ignore[no-untyped-def]
    from civicgrid.main import create_app

    return create_app(settings, db)


@pytest.fixture
def client(app):  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    with TestClient(app) as c:
        yield c
