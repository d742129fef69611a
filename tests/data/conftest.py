"""The `data_world` fixture shared by every data-platform test (SQLite and PostgreSQL).

On top of `tests.factories.make_tree` (city bureau, two counties, their departments):

| key           | org (code)                         | role           | may                          |
|---------------|------------------------------------|----------------|------------------------------|
| steward       | market1 县1市场监管局 (owner dept)     | data_steward   | data.read/manage/approve     |
| consumer      | dept1 县1综治办 (consumer dept)        | data_consumer  | data.read/apply              |
| consumer_steward | dept1 (the consumer dept's steward) | data_steward | manage only dept1's datasets |
| outsider      | town2 镇2四平台 (the other county)     | data_consumer  | data.read/apply              |
| admin         | bureau 市大数据局                     | admin          | everything (data.admin)      |
| resident      | village1                           | resident       | no data rights               |

`world.population(session)` registers the owner's `village-population` dataset (personal
fields with masks and rules, conditionally shared) and `world.load_rows(...)` loads rows
into it through the real ingest path. Files land under CIVICGRID_DATA_DIR (a temp dir).
"""

from __future__ import annotations

import csv
import io
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session

from civicgrid.accounts import service as accounts
from civicgrid.accounts.permissions import Role
from civicgrid.core.auth import Actor
from civicgrid.core.config import get_settings
from civicgrid.core.db import Database
from civicgrid.data import ingest, service
from civicgrid.data.models import Dataset, DataVersion
from tests.factories import Tree, make_tree, make_user

# xdist workers inherit the controller's CIVICGRID_DATA_DIR (tests/conftest.py sets it with
# setdefault), so without this they would share one data dir and meet each other's files.
if _worker := os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["CIVICGRID_DATA_DIR"] = str(Path(os.environ["CIVICGRID_DATA_DIR"]) / _worker)
    get_settings.cache_clear()

#: The sample dataset's fields (personal ones masked, with ingestion rules).
POPULATION_FIELDS: list[dict[str, Any]] = [
    {
        "name": "id_number",
        "title": "身份证号",
        "type": "string",
        "sensitivity": "personal",
        "mask": "id_number",
        "primary_key": True,
        "rules": {"not_null": True, "id_number": True},
    },
    {"name": "name", "title": "姓名", "sensitivity": "personal", "mask": "name", "rules": {"not_null": True}},
    {
        "name": "mobile",
        "title": "手机号",
        "sensitivity": "personal",
        "mask": "phone",
        "rules": {"mobile": True},
    },
    {"name": "village_code", "title": "村代码", "rules": {"regex": r"\d{12}"}},
    {"name": "birth_date", "title": "出生日期", "type": "date"},
    {"name": "household_size", "title": "户人数", "type": "integer", "rules": {"min": 1, "max": 30}},
]

#: Valid rows for `village-population` (ID numbers with correct GB 11643 check digits).
POPULATION_ROWS: list[dict[str, Any]] = [
    {
        "id_number": "11010519491231002X",
        "name": "张三",
        "mobile": "13812345678",
        "village_code": "331001001001",
        "birth_date": "1949-12-31",
        "household_size": 3,
    },
    {
        "id_number": "110101199003074477",
        "name": "李四",
        "mobile": "15912345678",
        "village_code": "331001001001",
        "birth_date": "1990-03-07",
        "household_size": 4,
    },
    {
        "id_number": "330102198001010018",
        "name": "王五",
        "mobile": "",
        "village_code": "331002001001",
        "birth_date": "1980-01-01",
        "household_size": 2,
    },
]


def csv_bytes(
    rows: Sequence[dict[str, Any]], *, encoding: str = "utf-8", header: Sequence[str] | None = None
) -> bytes:
    """Rows as a CSV file's bytes (header from the first row unless given)."""
    cols = list(header or (rows[0].keys() if rows else []))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for r in rows:
        w.writerow(["" if r.get(c) is None else r.get(c) for c in cols])
    return buf.getvalue().encode(encoding)


@dataclass
class DataWorld:
    db: Database
    tree: Tree
    tmp: Path

    def actor(self, session: Session, username: str) -> Actor:
        user = accounts.get_user_by_username(session, username)
        assert user is not None, username
        return accounts.actor_for_user(session, user)

    def population(self, session: Session, name: str = "village-population", **overrides: Any) -> Dataset:
        """The owner department's dataset with personal fields (conditionally shared)."""
        attrs: dict[str, Any] = {
            "name": name,
            "title": "村人口信息",
            "title_en": "Population by village",
            "description": "户籍人口，按村汇总",
            "tags": ["人口", "户籍"],
            "theme": "people",
            "grade": "important",
            "share_class": "conditional",
            "share_condition": "用于基层治理，须经审批",
            "open_class": "closed",
            "update_frequency": "monthly",
            "fields": POPULATION_FIELDS,
        } | overrides
        return service.create_dataset(session, self.actor(session, "steward"), **attrs)

    def write(self, filename: str, content: bytes) -> Path:
        path = self.tmp / filename
        path.write_bytes(content)
        return path

    def load_rows(
        self,
        name: str = "village-population",
        rows: Sequence[dict[str, Any]] = POPULATION_ROWS,
        *,
        mode: str = "append",
        username: str = "steward",
    ) -> DataVersion:
        """Load rows (as a UTF-8 CSV) through the real ingest path; returns the version."""
        path = self.write(f"{name}-{len(rows)}.csv", csv_bytes(rows))
        with self.db.session() as s:
            actor = self.actor(s, username)
        return ingest.ingest(self.db, actor, name, path=path, mode=mode)


def build_data_world(session: Session) -> Tree:
    t = make_tree(session)
    make_user(session, t, "steward", Role.data_steward, "market1", display_name="钱管理")
    make_user(session, t, "consumer", Role.data_consumer, "dept1", display_name="孙使用")
    make_user(session, t, "consumer_steward", Role.data_steward, "dept1", display_name="周管理")
    make_user(session, t, "outsider", Role.data_consumer, "town2", display_name="吴外部")
    make_user(session, t, "admin", Role.admin, "bureau", display_name="郑局长")
    make_user(session, t, "resident", Role.resident, "village1", display_name="冯居民")
    return t


@pytest.fixture
def data_world(db: Database, tmp_path: Path) -> DataWorld:
    with db.session() as s:
        tree = build_data_world(s)
    return DataWorld(db=db, tree=tree, tmp=tmp_path)


@pytest.fixture(autouse=True)
def _no_earlier_datasets() -> Iterator[None]:
    """Each test starts without dataset files: the data dir lives as long as the test process,
    and a dataset name and version the next test reuses must meet neither the last test's
    files (a leftover staging folder) nor the shared engine's cached Parquet footers of them."""
    service.engine().close()
    shutil.rmtree(get_settings().data_dir / "datasets", ignore_errors=True)
    yield
