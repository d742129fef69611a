"""Data rules: a condition on a data-platform dataset, read through its query engine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from civicgrid.accounts.permissions import Role
from civicgrid.core.auth import SYSTEM
from civicgrid.core.errors import Invalid, NotFound
from civicgrid.data import ingest
from civicgrid.data import service as data
from civicgrid.risks import service
from civicgrid.risks.models import DataRow, Warning, WarningEvidence
from tests.data.conftest import csv_bytes
from tests.factories import make_user
from tests.risks.conftest import World, make_rule

FIELDS = [
    {"name": "site", "title": "场所"},
    {"name": "village_code", "title": "村代码"},
    {"name": "status", "title": "状态"},
    {"name": "owner_phone", "title": "负责人电话", "sensitivity": "personal", "mask": "phone"},
]


def _dataset(session: Session, world: World, tmp_path: Path) -> None:
    make_user(session, world.tree, "steward", Role.data_steward, "market1")
    steward = world.actor(session, "steward")
    data.create_dataset(
        session,
        steward,
        name="fire-inspections",
        title="消防检查",
        theme="matter",
        grade="general",
        share_class="unconditional",
        open_class="closed",
        fields=FIELDS,
    )
    session.commit()
    v1, v2 = world.region("village1").code, world.region("village2").code
    rows = [
        {"site": "东山超市", "village_code": v1, "status": "expired", "owner_phone": "13812345678"},
        {"site": "西山饭店", "village_code": v1, "status": "expired", "owner_phone": "13812345679"},
        {"site": "南山网吧", "village_code": v2, "status": "expired", "owner_phone": ""},
        {"site": "北山旅馆", "village_code": v2, "status": "valid", "owner_phone": ""},
    ]
    path = tmp_path / "fire.csv"
    path.write_bytes(csv_bytes(rows))
    ingest.ingest(world.db, steward, "fire-inspections", path=path, mode="append")


PARAMS = {
    "dataset": "fire-inspections",
    "conditions": [{"field": "status", "op": "eq", "value": "expired"}],
    "region_field": "village_code",
    "levels": {"yellow": 1, "red": 2},
}


def test_data_rule_raises_per_region(session: Session, world: World, tmp_path: Path) -> None:
    _dataset(session, world, tmp_path)
    dry = service.dry_run(
        session,
        world.actor(session, "admin"),
        service.RuleInput("过期消防检查", "data", PARAMS, world.region("city").code),
    )
    assert sorted((w.region.code, str(w.level), w.evidence) for w in dry.warnings) == [
        (world.region("village1").code, "red", 2),
        (world.region("village2").code, "yellow", 1),
    ]
    assert session.scalar(select(func.count()).select_from(DataRow)) == 0  # the dry run wrote nothing
    rule = make_rule(session, world, "data", PARAMS)
    stats = service.full_pass(session)
    assert stats.get("created") == 2
    warnings = {w.region_id: w for w in session.scalars(select(Warning))}
    red = warnings[world.region("village1").id]
    assert (red.level, red.evidence_count, red.rule_id) == ("red", 2, rule.id)
    values = [json.loads(r.values) for r in session.scalars(select(DataRow))]
    assert sorted(v["site"] for v in values) == ["东山超市", "南山网吧", "西山饭店"]
    assert all("owner_phone" not in v for v in values)  # personal fields never leave the engine
    evidence = service.evidence_of(session, SYSTEM, red)
    assert {e["kind"] for e in evidence} == {"data"} and evidence[0]["values"]["status"] == "expired"
    # Idempotent: the same data raises nothing more.
    assert service.full_pass(session).get("unchanged") == 2
    assert session.scalar(select(func.count()).select_from(WarningEvidence)) == 3


def test_data_rules_refuse_bad_conditions(session: Session, world: World, tmp_path: Path) -> None:
    _dataset(session, world, tmp_path)
    for bad in (
        {**PARAMS, "conditions": []},
        {**PARAMS, "conditions": [{"field": "nope", "op": "eq", "value": 1}]},
        {**PARAMS, "region_field": "owner_phone"},
        {**PARAMS, "max_rows": 100000},
    ):
        with pytest.raises(Invalid):
            make_rule(session, world, "data", bad)
    with pytest.raises(NotFound):
        make_rule(session, world, "data", {**PARAMS, "dataset": "no-such-data"})
    # Too many matching rows: the full pass skips the rule (logged), nothing is raised.
    make_rule(session, world, "data", {**PARAMS, "max_rows": 1})
    assert service.full_pass(session).get("failed") == 1
    assert session.scalar(select(func.count()).select_from(Warning)) == 0
