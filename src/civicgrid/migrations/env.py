"""Alembic environment: the URL comes from the caller's config (see core/migrate.py)."""

from __future__ import annotations

from typing import Any

from alembic import context

from civicgrid.core.db import Base, UTCDateTime, make_engine
from civicgrid.models import load_all

load_all()
config = context.config
target_metadata = Base.metadata


def render_item(type_: str, obj: Any, autogen_context: Any) -> str | bool:
    # Migrations must not import application types: UTC datetimes are plain timestamptz there.
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


OPTS: dict[str, Any] = {
    "target_metadata": target_metadata,
    "render_as_batch": True,
    "render_item": render_item,
}


def run_migrations_online() -> None:
    url = config.get_main_option("sqlalchemy.url") or ""
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, **OPTS)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(url)
    with engine.connect() as conn:
        context.configure(connection=conn, **OPTS)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run_migrations_online()
