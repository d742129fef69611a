"""Engine, sessions and the declarative base shared by every package's models."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar

from sqlalchemy import (
    Connection,
    DateTime,
    Engine,
    MetaData,
    Table,
    TextClause,
    any_,
    bindparam,
    create_engine,
    event,
    func,
    insert,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    QueryableAttribute,
    Session,
    make_transient_to_detached,
    mapped_column,
    sessionmaker,
)
from sqlalchemy.orm.attributes import instance_state
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import TypeDecorator

# Stable constraint names so Alembic migrations are identical on SQLite and PostgreSQL.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime()}


class TimestampMixin:
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


def make_engine(url: str, **kwargs: Any) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # WAL lets readers run beside the writer; synchronous=FULL makes every commit durable.
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    # Sized for FastAPI's thread pool (40 threads), so a burst waits on the database, not the pool.
    kwargs.setdefault("pool_size", 20)
    kwargs.setdefault("max_overflow", 20)
    # Last in, first out: the few connections a steady load needs stay in use, with their
    # prepared statements and caches warm. First in, first out (the default) rotated every
    # request through all the connections a past burst opened.
    kwargs.setdefault("pool_use_lifo", True)
    return create_engine(url, pool_pre_ping=True, **kwargs)


class Database:
    """One engine and its session factory; the app and the CLI each hold one."""

    def __init__(self, url: str, pool_size: int | None = None) -> None:
        self.url = url
        sized = pool_size and not url.startswith("sqlite")  # SQLite has one writer whatever the pool
        self.engine = make_engine(url, **{"pool_size": pool_size, "max_overflow": pool_size} if sized else {})
        self.sessionmaker = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session committed on success and rolled back on any error."""
        s = self.sessionmaker()
        try:
            yield s
            s.commit()
        except BaseException:
            s.rollback()
            raise
        finally:
            s.close()

    def dispose(self) -> None:
        self.engine.dispose()


def one_of(
    session: Session, column: ColumnElement[Any] | QueryableAttribute[Any], values: Iterable[Any]
) -> ColumnElement[bool]:
    """`column IN (values)` for statements that run on every request. On PostgreSQL it is
    `column = ANY(:array)`: one parameter, so the statement's text is the same for any number
    of values and is compiled, converted and prepared once per connection (an IN list is
    rendered anew for each length: ≈ 0.3 ms more CPU at 64 values). Elsewhere an IN list."""
    expr = column.expression if isinstance(column, QueryableAttribute) else column
    values = list(values)
    if session.get_bind().dialect.name == "postgresql":
        return expr == any_(bindparam(None, values, type_=ARRAY(expr.type)))
    return expr.in_(values)


# ---- bulk inserts that keep the ORM's view ---------------------------------------------------

M = TypeVar("M", bound=Base)


def new_ids(session: Session, tables: Sequence[Table], count: int) -> list[list[int]]:
    """Primary keys for `count` new rows of each table, handed out before the INSERT (so rows
    of one batch can point at each other, and the INSERT needs no RETURNING). PostgreSQL takes
    them from the tables' sequences in one statement. SQLite continues after the largest id:
    the caller must already hold the write lock (have written in this transaction), so no other
    writer can take the same ids."""
    if count <= 0:
        return [[] for _ in tables]
    conn = session.connection()
    if conn.dialect.name == "postgresql":
        cols = ", ".join(f"nextval(pg_get_serial_sequence('{t.name}', 'id'))" for t in tables)
        rows = conn.execute(text(f"SELECT {cols} FROM generate_series(1, :n)"), {"n": count}).all()
        return [[int(r[i]) for r in rows] for i in range(len(tables))]
    tops = conn.execute(
        select(*(select(func.coalesce(func.max(t.c.id), 0)).scalar_subquery() for t in tables))
    ).one()
    return [list(range(top + 1, top + 1 + count)) for top in tops]


def insert_rows(session: Session, model: type[M], rows: Sequence[Mapping[str, Any]]) -> list[M]:
    """Insert rows (ids included, see `new_ids`) with `insert_many` — where the ORM's unit of
    work would cost more than the rows — and return them as persistent ORM objects, as a flush
    would leave them (no query on reading any column). Flush listeners do not see these rows:
    the caller does what they would."""
    table: Table = model.__table__  # type: ignore[assignment]
    full = [_full_row(table, r) for r in rows]
    if not full:
        return []
    insert_many(session.connection(), table, full)
    out = []
    for row in full:
        obj = with_values(model, row)
        make_transient_to_detached(obj)  # as if loaded: every column set, no pending change
        session.add(obj)
        out.append(obj)
    return out


def with_values(model: type[M], values: Mapping[str, Any]) -> M:
    """An ORM object holding these column values, built as a query's rows are: straight into
    its state, without the constructor's event per attribute (four times the cost, and intake
    builds three objects a report). Transient, with no history: a caller that keeps it makes
    it detached (`make_transient_to_detached`) or leaves it out of any session."""
    obj: M = model.__mapper__.class_manager.new_instance()
    instance_state(obj).dict.update(values)
    return obj


def insert_many(
    conn: Connection, table: Table, rows: Sequence[Mapping[str, Any]], *, add_on_conflict: Sequence[str] = ()
) -> None:
    """INSERT rows (all with the same keys) in one statement. On PostgreSQL the statement reads
    the rows as one JSON document (`json_populate_recordset` over the table's row type): its
    text never changes with the number of rows, so it is prepared once per connection and runs
    as one executor pass, where an executemany runs a statement per row, a multi-row VALUES is
    parsed anew for each size, and arrays are escaped element by element in Python. Elsewhere
    an executemany. `add_on_conflict`: counter columns; a row whose other columns match an
    existing row's unique key adds its counters to that row instead."""
    if not rows:
        return
    names = list(rows[0])
    keys = [n for n in names if n not in add_on_conflict]
    dialect = conn.dialect
    if dialect.name != "postgresql":
        stmt: Any = insert(table)
        if add_on_conflict:
            ins = sqlite_insert(table)
            stmt = ins.on_conflict_do_update(
                index_elements=keys, set_={c: table.c[c] + ins.excluded[c] for c in add_on_conflict}
            )
        conn.execute(stmt, [dict(r) for r in rows])
        return
    processors = [(n, table.c[n].type.bind_processor(dialect)) for n in names]
    # A key left out reads as NULL (the column list still names it): NULLs cost no JSON.
    document = json.dumps(
        [{n: (p(v) if p else v) for n, p in processors if (v := r[n]) is not None} for r in rows],
        ensure_ascii=False,
        separators=(",", ":"),
        default=str,  # datetimes and dates in ISO form, which PostgreSQL reads back exactly
    )
    conn.execute(_json_insert(table, tuple(names), tuple(add_on_conflict)), {"rows": document})


_JSON_INSERTS: dict[tuple[str, tuple[str, ...], tuple[str, ...]], TextClause] = {}


def _json_insert(table: Table, names: tuple[str, ...], counters: tuple[str, ...]) -> TextClause:
    key = (table.name, names, counters)
    if key not in _JSON_INSERTS:
        cols = ", ".join(names)
        # WITH ORDINALITY … ORDER BY: rows (and the ids their defaults draw) in the given order
        sql = (
            f"INSERT INTO {table.name} ({cols}) SELECT {cols} FROM ROWS FROM "
            f"(json_populate_recordset(NULL::{table.name}, CAST(:rows AS json))) WITH ORDINALITY AS u "
            "ORDER BY u.ordinality"
        )
        if counters:
            keys = ", ".join(n for n in names if n not in counters)
            adds = ", ".join(f"{c} = {table.name}.{c} + excluded.{c}" for c in counters)
            sql += f" ON CONFLICT ({keys}) DO UPDATE SET {adds}"
        _JSON_INSERTS[key] = text(sql)
    return _JSON_INSERTS[key]


def _full_row(table: Table, values: Mapping[str, Any]) -> dict[str, Any]:
    """Every column: the value given, else the column's Python-side default, else NULL."""
    row = {}
    for key, scalar, call in _defaults(table):
        if key in values:
            row[key] = values[key]
        elif call is not None:
            row[key] = call(None)
        else:
            row[key] = scalar
    return row


_DEFAULTS: dict[Table, list[tuple[str, Any, Callable[[Any], Any] | None]]] = {}


def _defaults(table: Table) -> list[tuple[str, Any, Callable[[Any], Any] | None]]:
    """Per column: its key, its scalar default (or None) and its callable default (or None),
    read off the table once (iterating `table.columns` builds a list on every call)."""
    found = _DEFAULTS.get(table)
    if found is None:
        found = []
        for c in table.columns:
            d = c.default
            scalar = d.arg if d is not None and d.is_scalar else None  # type: ignore[attr-defined]
            call = d.arg if d is not None and d.is_callable else None  # type: ignore[attr-defined]
            found.append((c.key, scalar, call))
        _DEFAULTS[table] = found
    return found
