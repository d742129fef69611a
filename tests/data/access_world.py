"""The access tests' world: `data_world` (owner market dept with a steward, consumer dept,
outsider in the other county, the bureau's admin) plus three catalogue entries registered
through the catalogue service: `population` (conditionally shared, personal fields),
`shops` (unconditionally shared) and `secret` (not shared)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy.orm import Session

from civicgrid.core.auth import Actor
from civicgrid.data import service
from tests.data.conftest import DataWorld

POPULATION_FIELDS: list[dict[str, Any]] = [
    {"name": "village", "title": "村"},
    {"name": "name", "title": "姓名", "sensitivity": "personal", "mask": "name"},
    {"name": "id_number", "title": "身份证号", "sensitivity": "personal", "mask": "id_number"},
    {"name": "phone", "title": "手机号", "sensitivity": "personal", "mask": "phone"},
    {"name": "age", "title": "年龄", "type": "integer"},
]
POPULATION_ROWS: list[dict[str, Any]] = [
    {"village": "村1", "name": "张三", "id_number": "110101199003071234", "phone": "13812345678", "age": 34},
    {"village": "村1", "name": "李四", "id_number": "110101200501011111", "phone": "13900001111", "age": 19},
    {"village": "村1", "name": "赵六", "id_number": "110101201501012222", "phone": "13700002222", "age": 9},
    {"village": "村2", "name": "王五", "id_number": "330102198001010018", "phone": "15912345678", "age": 45},
    {"village": "村2", "name": "欧阳娜娜", "id_number": "330102199912123333", "phone": "", "age": 26},
]


@dataclass
class AccessWorld:
    db: Any
    data: DataWorld

    def actor(self, session: Session, username: str) -> Actor:
        return self.data.actor(session, username)

    def org_id(self, session: Session, username: str) -> int:
        return self.actor(session, username).org_id


def register(session: Session, steward: Actor) -> None:
    common = {"theme": "people", "grade": "general", "open_class": "closed"}
    service.create_dataset(
        session,
        steward,
        name="population",
        title="人口",
        share_class="conditional",
        share_condition="用于民生服务",
        fields=POPULATION_FIELDS,
        **common,
    )
    service.create_dataset(
        session,
        steward,
        name="shops",
        title="个体工商户",
        share_class="unconditional",
        fields=[
            {"name": "shop"},
            {"name": "licence"},
            {"name": "phone", "sensitivity": "personal", "mask": "phone"},
        ],
        **common,
    )
    service.create_dataset(
        session,
        steward,
        name="secret",
        title="涉密",
        share_class="none",
        share_condition="涉及国家秘密",
        fields=[{"name": "x"}],
        **common,
    )


@pytest.fixture(name="access_world")
def access_world_fixture(data_world: DataWorld) -> AccessWorld:
    """Import this into a test module; tests take it as `access_world`."""
    with data_world.db.session() as s:
        register(s, data_world.actor(s, "steward"))
    return AccessWorld(data_world.db, data_world)
