"""Clustering a load: rows sorted by the chosen fields, so filtered reads skip row groups."""

from __future__ import annotations

import json

import pytest

from civicgrid.core.errors import Invalid
from civicgrid.data import engine as eng
from civicgrid.data import ingest, service
from civicgrid.data.models import DatasetField
from tests.data.conftest import POPULATION_ROWS, DataWorld, csv_bytes


def _rows(n: int) -> list[dict[str, object]]:
    """n valid people in villages given in descending order (so sorting is visible)."""
    base = POPULATION_ROWS[0]
    return [
        base | {"village_code": f"3310010{(n - i) % 97:05d}", "household_size": 1 + i % 9} for i in range(n)
    ]


def test_cluster_by_sorts_the_rows_and_keeps_the_rejects(data_world: DataWorld) -> None:
    w = data_world
    with w.db.session() as s:
        w.population(s)
    rows = [*_rows(300), POPULATION_ROWS[1] | {"mobile": "12345"}]  # line 302: a bad mobile
    path = w.write("people.csv", csv_bytes(rows))
    with w.db.session() as s:
        actor = w.actor(s, "steward")
    dv = ingest.ingest(w.db, actor, "village-population", path=path, cluster_by=["village_code"])
    assert (dv.rows, dv.rejected) == (300, 1)
    e = service.engine()
    files = e.version_files(dv.path)
    page = e.query(files, eng.QueryPlan(fields=["village_code"], limit=1000, with_total=False))
    codes = [r[0] for r in page.rows]
    assert codes == sorted(codes) and len(codes) == 300
    assert [r["_line"] for r in e.read_rejected(dv.path)] == [302]


def test_unclustered_load_keeps_the_file_order(data_world: DataWorld) -> None:
    w = data_world
    with w.db.session() as s:
        w.population(s)
    dv = w.load_rows(rows=_rows(50))
    e = service.engine()
    page = e.query(e.version_files(dv.path), eng.QueryPlan(fields=["village_code"], limit=100))
    assert [r[0] for r in page.rows] == [str(r["village_code"]) for r in _rows(50)]


def test_cluster_by_an_unknown_field_fails_the_load(data_world: DataWorld) -> None:
    w = data_world
    with w.db.session() as s:
        w.population(s)
    path = w.write("people.csv", csv_bytes(POPULATION_ROWS))
    with w.db.session() as s:
        actor = w.actor(s, "steward")
    with pytest.raises(Invalid):
        ingest.ingest(w.db, actor, "village-population", path=path, cluster_by=["no_such_field"])
    with w.db.session() as s:
        assert service.current_version(s, service.get_dataset(s, "village-population")) is None


def test_cluster_fields_come_from_the_cluster_rule(data_world: DataWorld) -> None:
    w = data_world
    with w.db.session() as s:
        ds = w.population(s)
        assert ingest.cluster_fields(ds) == []
        f = next(f for f in ds.fields if f.name == "village_code")
        # The rule as the catalogue will store it once it accepts "cluster" (service.RULE_KEYS).
        f.rules = json.dumps(service.rules_of(f) | {"cluster": True})
        assert ingest.cluster_fields(ds) == ["village_code"]
        assert isinstance(f, DatasetField)
