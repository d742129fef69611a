"""Clustering a load: rows sorted by the chosen fields, so filtered reads skip row groups."""

from __future__ import annotations

from typing import Any

import pytest

from civicgrid.core.errors import Invalid
from civicgrid.data import engine as eng
from civicgrid.data import ingest, service
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


def _with_rule(fields: list[dict[str, Any]], name: str, **rule: object) -> list[dict[str, Any]]:
    return [f | {"rules": f["rules"] | rule} if f["name"] == name else f for f in fields]


def test_the_cluster_rule_is_accepted_by_the_catalogue_and_sorts_each_load(data_world: DataWorld) -> None:
    w = data_world
    with w.db.session() as s:
        ds = w.population(s)
        assert ingest.cluster_fields(ds) == []
        fields = [service.field_dict(f) for f in ds.fields]
        clustered = _with_rule(fields, "village_code", cluster=True)
        service.update_dataset(s, w.actor(s, "steward"), "village-population", fields=clustered)
    with w.db.session() as s:
        ds = service.get_dataset(s, "village-population")
        assert ingest.cluster_fields(ds) == ["village_code"]
    dv = w.load_rows(rows=_rows(50))  # no cluster_by given: the rule decides
    e = service.engine()
    codes = [r[0] for r in e.query(e.version_files(dv.path), eng.QueryPlan(fields=["village_code"])).rows]
    assert codes == sorted(codes) and len(codes) == 50


@pytest.mark.parametrize(
    ("rule", "says"),
    [({"clustre": True}, "cluster"), ({"cluster": "yes"}, "true 或 false")],
)
def test_a_nonsense_rule_is_refused_with_what_is_allowed(
    data_world: DataWorld, rule: dict[str, object], says: str
) -> None:
    w = data_world
    with w.db.session() as s:
        ds = w.population(s)
        fields = [service.field_dict(f) for f in ds.fields]
    with pytest.raises(Invalid) as err, w.db.session() as s:
        service.update_dataset(
            s, w.actor(s, "steward"), "village-population", fields=_with_rule(fields, "village_code", **rule)
        )
    assert "village_code" in err.value.translated() and says in err.value.translated()
    with w.db.session() as s:
        assert ingest.cluster_fields(service.get_dataset(s, "village-population")) == []
