"""Imports every package's models so the metadata is complete (Alembic, tests)."""

from __future__ import annotations


def load_all() -> None:
    import civicgrid.accounts.models
    import civicgrid.core.audit
    import civicgrid.data.models
    import civicgrid.disputes.models
    import civicgrid.events.models
    import civicgrid.events.rollups
    import civicgrid.regions.models
    import civicgrid.risks.models  # noqa: F401
