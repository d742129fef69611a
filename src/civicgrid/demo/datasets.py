"""Demo datasets of the public data platform (公共数据平台), made deterministically from the demo
jurisdiction: population by village (人口综合库), enterprises with their legal representatives
(法人综合库), dangerous-goods sites with coordinates (危险化学品经营储存场所) and the open grid
overview (网格基础信息). Every person, enterprise and site is synthetic.

They are registered by the bureau's data steward and loaded through the real ingestion path
(`data.ingest`, a few rows failing their rules on purpose so the quality report has something
to show); the demo consumer (county market supervision) holds an approved grant, an automatic
one and a pending application, and an API key; a superseded load past its retention gets the
retention check's destruction request. All of it inside the demo's one transaction; the key
is written to the demo credentials under "data_platform".
"""

from __future__ import annotations

import csv
import json
import random
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from civicgrid.accounts import service as accounts
from civicgrid.core.auth import Actor
from civicgrid.core.db import utcnow
from civicgrid.data import access, ingest, keys, lifecycle, service
from civicgrid.data.engine import ID_CHECK, ID_WEIGHTS
from civicgrid.data.models import DataVersion, Usage
from civicgrid.regions.models import Region, RegionLevel

DATA = Path(__file__).resolve().parent / "data"
BUREAU = "331000-bureau"
STEWARD = "steward"
CONSUMER = "consumer"
CONSUMER_COUNTY = "331002"  # the consumer works for 椒江区市场监督管理局
MAX_PEOPLE = 4000  # the population table stays small: the demo loads in seconds
# Births and registrations count back from a fixed day, so a seed gives the same people on any
# day; ages and the last inspection are relative to the day the demo is loaded.
REFERENCE_DAY = date(2026, 1, 1)


class _OneTransaction:
    """Stands in for `Database` so ingestion runs inside the demo's single transaction: every
    `session()` is the demo's session (flushed, never committed). Only the loading thread may
    use it; ingestion's advisory progress writes from its watcher thread are skipped."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self._thread = threading.get_ident()

    @contextmanager
    def session(self) -> Iterator[Session]:
        if threading.get_ident() != self._thread:
            raise RuntimeError("the demo's transaction belongs to the loading thread")
        yield self._session
        self._session.flush()


# ---- synthetic values ------------------------------------------------------------------------


def _names() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DATA / "names.json").read_text(encoding="utf-8"))
    return data


class _Maker:
    """Seeded people, numbers and places: the same seed gives the same rows."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(f"civicgrid-demo-data-{seed}")
        names = _names()
        self.surnames: list[str] = names["surnames"]
        self.given: list[str] = names["given"]
        self.stems = [a + b for a, _pa in names["place_first"] for b, _pb in names["place_second"] if a != b]
        self._seq: dict[str, int] = {}

    def name(self) -> str:
        k = 1 if self.rng.random() < 0.3 else 2
        return self.rng.choice(self.surnames) + "".join(self.rng.choice(self.given) for _ in range(k))

    def phone(self) -> str:
        prefix = self.rng.choice(("138", "139", "135", "137", "150", "158", "177", "189"))
        return f"{prefix}{self.rng.randrange(10**8):08d}"

    def id_number(self, area: str, birth: date, male: bool) -> str:
        key = f"{area}{birth:%Y%m%d}"
        n = self._seq.get(key, 0) + 1
        self._seq[key] = n
        seq = n * 2 - (1 if male else 0)  # the 17th digit: odd for men, even for women
        body = f"{key}{seq % 1000:03d}"
        return body + ID_CHECK[sum(w * int(d) for w, d in zip(ID_WEIGHTS, body, strict=True)) % 11]

    def birth(self, low: int, high: int) -> date:
        """A birth date `low` to `high` years before the fixed reference day."""
        return REFERENCE_DAY - timedelta(days=self.rng.randrange(low * 365, high * 365))

    def credit_code(self, county: str) -> str:
        """A 统一社会信用代码-shaped 18-character code (the check character is not computed)."""
        alphabet = "0123456789ABCDEFGHJKLMNPQRTUWXY"
        return "91" + county + "".join(self.rng.choices(alphabet, k=10))


def _age(birth: date, on: date | None = None) -> int:
    day = on or date.today()
    return day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))


def _write_csv(folder: Path, name: str, rows: Sequence[dict[str, Any]]) -> Path:
    path = folder / f"{name}.csv"
    with path.open("w", encoding="utf-8", newline="") as fp:
        w = csv.DictWriter(fp, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


# ---- the places ------------------------------------------------------------------------------


def _places(session: Session) -> dict[str, Any]:
    regions = list(session.scalars(select(Region).order_by(Region.code)))
    by_id = {r.id: r for r in regions}

    def up(r: Region, level: RegionLevel) -> Region | None:
        node: Region | None = r
        while node is not None and node.level != level:
            node = by_id.get(node.parent_id) if node.parent_id else None
        return node

    villages = [r for r in regions if r.level == RegionLevel.village]
    grids = [r for r in regions if r.level == RegionLevel.grid]
    return {"villages": villages, "grids": grids, "up": up}


# ---- the datasets ------------------------------------------------------------------------------

PERSON = {"sensitivity": "personal"}

POPULATION: dict[str, Any] = {
    "name": "village-population",
    "title": "村（社区）常住人口信息",
    "title_en": "Residents by village and community",
    "description": "人口综合库按村（社区）汇总的常住人口，含户籍人口与流动人口、独居老人标记，"
    "由网格员走访采集、公安户籍比对。用于基层治理、民生服务和应急疏散。",
    "description_en": "Residents per village from the population base library, collected by grid workers.",
    "tags": ["人口", "户籍人口", "流动人口", "独居老人", "网格化"],
    "theme": "people",
    "grade": "important",
    "share_class": "conditional",
    "share_condition": "限用于基层治理、民生服务和应急处置，须经数据提供单位审批，个人信息默认脱敏。",
    "open_class": "closed",
    "update_frequency": "monthly",
    "source_system": "基层治理四平台网格走访系统；公安人口信息系统",
    "spatial_scope": "331000000000",
    "retention_days": 1825,
    "fields": [
        {"name": "id_number", "title": "身份证号", **PERSON, "mask": "id_number", "primary_key": True,
         "rules": {"not_null": True, "id_number": True}},
        {"name": "name", "title": "姓名", **PERSON, "mask": "name", "rules": {"not_null": True}},
        {"name": "gender", "title": "性别"},
        {"name": "birth_date", "title": "出生日期", "type": "date"},
        {"name": "age", "title": "年龄", "type": "integer", "rules": {"min": 0, "max": 120}},
        {"name": "phone", "title": "联系电话", **PERSON, "mask": "phone", "rules": {"mobile": True}},
        {"name": "county", "title": "县（市、区）"},
        {"name": "township", "title": "乡镇（街道）"},
        {"name": "village_code", "title": "村（社区）代码", "rules": {"regex": r"\d{12}"}},
        {"name": "village", "title": "村（社区）"},
        {"name": "address", "title": "居住地址", **PERSON, "mask": "partial"},
        {"name": "household_no", "title": "户号"},
        {"name": "relation", "title": "与户主关系"},
        {"name": "resident_type", "title": "人口类型"},
        {"name": "elderly_alone", "title": "独居老人", "type": "boolean"},
    ],
}  # fmt: skip

ENTERPRISES: dict[str, Any] = {
    "name": "enterprises",
    "title": "企业法人登记信息",
    "title_en": "Registered enterprises",
    "description": "法人综合库中的企业登记信息：统一社会信用代码、企业类型、行业、注册资本、成立日期、"
    "登记状态，以及法定代表人及其联系方式。",
    "description_en": "Enterprises of the legal-person base library with their legal representatives.",
    "tags": ["法人", "企业法人", "市场主体", "统一社会信用代码"],
    "theme": "organisation",
    "grade": "general",
    "share_class": "unconditional",
    "open_class": "closed",
    "update_frequency": "daily",
    "source_system": "市场监管企业登记系统",
    "spatial_scope": "331000000000",
    "fields": [
        {"name": "credit_code", "title": "统一社会信用代码", "primary_key": True,
         "rules": {"not_null": True, "regex": "[0-9A-Z]{18}"}},
        {"name": "name", "title": "企业名称", "rules": {"not_null": True}},
        {"name": "type", "title": "企业类型"},
        {"name": "industry", "title": "所属行业"},
        {"name": "registered_capital", "title": "注册资本（万元）", "type": "float", "rules": {"min": 0}},
        {"name": "established", "title": "成立日期", "type": "date"},
        {"name": "status", "title": "登记状态"},
        {"name": "county_code", "title": "县（市、区）代码"},
        {"name": "township", "title": "乡镇（街道）"},
        {"name": "address", "title": "经营场所"},
        {"name": "legal_rep", "title": "法定代表人", **PERSON, "mask": "name"},
        {"name": "legal_rep_id", "title": "法定代表人身份证号", **PERSON, "mask": "id_number",
         "rules": {"id_number": True}},
        {"name": "legal_rep_phone", "title": "法定代表人电话", **PERSON, "mask": "phone",
         "rules": {"mobile": True}},
    ],
}  # fmt: skip

HAZARD_SITES: dict[str, Any] = {
    "name": "hazardous-sites",
    "title": "危险化学品经营储存场所",
    "title_en": "Dangerous-goods business and storage sites",
    "description": "辖区内危险化学品经营、储存场所及加油站、液化气供应站、烟花爆竹经营点：位置坐标、"
    "主要危化品、最大储存量、重大危险源等级、安全负责人和最近一次检查结果。",
    "description_en": "Sites handling or storing dangerous goods, with coordinates and inspections.",
    "tags": ["危化品", "安全生产", "应急管理", "重大危险源"],
    "theme": "thing",
    "grade": "important",
    "share_class": "conditional",
    "share_condition": "限用于安全生产监管、联合检查和应急处置，须经审批。",
    "open_class": "closed",
    "update_frequency": "quarterly",
    "source_system": "应急管理危化品监管系统",
    "spatial_scope": "331000000000",
    "retention_days": 365,
    "k_threshold": 5,
    "fields": [
        {"name": "site_id", "title": "场所编号", "primary_key": True, "rules": {"not_null": True}},
        {"name": "name", "title": "场所名称"},
        {"name": "enterprise", "title": "经营单位"},
        {"name": "credit_code", "title": "统一社会信用代码"},
        {"name": "category", "title": "场所类别"},
        {"name": "chemicals", "title": "主要危化品"},
        {"name": "max_storage_t", "title": "最大储存量（吨）", "type": "float", "rules": {"min": 0}},
        {"name": "hazard_level", "title": "重大危险源等级"},
        {"name": "lon", "title": "经度", "type": "float", "rules": {"min": 119, "max": 123}},
        {"name": "lat", "title": "纬度", "type": "float", "rules": {"min": 27, "max": 30}},
        {"name": "county_code", "title": "县（市、区）代码"},
        {"name": "township", "title": "乡镇（街道）"},
        {"name": "village", "title": "村（社区）"},
        {"name": "contact", "title": "安全负责人", **PERSON, "mask": "name"},
        {"name": "contact_phone", "title": "安全负责人电话", **PERSON, "mask": "phone",
         "rules": {"mobile": True}},
        {"name": "last_inspection", "title": "最近检查日期", "type": "date"},
        {"name": "inspection_result", "title": "检查结果"},
    ],
}  # fmt: skip

GRID_OVERVIEW: dict[str, Any] = {
    "name": "grid-overview",
    "title": "网格基础信息",
    "title_en": "Grid overview",
    "description": "全科网格的编码、名称、所属村（社区）和乡镇（街道）、户数、人口数和中心点坐标。",
    "description_en": "Grids with their village and township, households, residents and centre point.",
    "tags": ["网格化", "网格员", "地名地址"],
    "theme": "land",
    "grade": "general",
    "share_class": "unconditional",
    "open_class": "open",
    "update_frequency": "monthly",
    "source_system": "CivicGrid 区域与网格",
    "spatial_scope": "331000000000",
    "fields": [
        {"name": "grid_code", "title": "网格编码", "primary_key": True},
        {"name": "grid_name", "title": "网格名称"},
        {"name": "village", "title": "村（社区）"},
        {"name": "township", "title": "乡镇（街道）"},
        {"name": "county", "title": "县（市、区）"},
        {"name": "households", "title": "户数", "type": "integer"},
        {"name": "residents", "title": "人口数", "type": "integer"},
        {"name": "lon", "title": "中心点经度", "type": "float"},
        {"name": "lat", "title": "中心点纬度", "type": "float"},
    ],
}


def _population_rows(m: _Maker, places: dict[str, Any]) -> list[dict[str, Any]]:
    villages: list[Region] = places["villages"]
    per_village = max(4, min(40, MAX_PEOPLE // max(1, len(villages))))
    rows: list[dict[str, Any]] = []
    for v in villages:
        town, county = places["up"](v, RegionLevel.township), places["up"](v, RegionLevel.county)
        area = v.code[:6]
        for h in range(max(1, per_village // 3)):
            household = f"{v.code}{h + 1:04d}"
            street = f"{m.rng.choice(m.stems)}路{m.rng.randrange(1, 300)}号"
            members = m.rng.choice([1, 1, 2, 3, 3, 4, 5])
            head_birth = m.birth(25, 90)
            head_age = _age(head_birth, REFERENCE_DAY)  # the family's shape does not depend on today
            for k in range(members):
                if k == 0:
                    birth, relation = head_birth, "户主"
                elif k == 1:
                    birth, relation = m.birth(max(20, head_age - 8), head_age + 6), "配偶"
                else:
                    low = max(0, head_age - 40)
                    birth, relation = m.birth(low, max(low + 1, head_age - 18)), "子女"
                male = m.rng.random() < 0.5
                age = _age(birth)
                rows.append(
                    {
                        "id_number": m.id_number(area, birth, male),
                        "name": m.name(),
                        "gender": "男" if male else "女",
                        "birth_date": birth.isoformat(),
                        "age": age,
                        "phone": m.phone() if _age(birth, REFERENCE_DAY) >= 16 else "",
                        "county": county.name if county else "",
                        "township": town.name if town else "",
                        "village_code": v.code,
                        "village": v.name,
                        "address": f"{v.name}{street}",
                        "household_no": household,
                        "relation": relation,
                        "resident_type": "流动人口" if m.rng.random() < 0.15 else "户籍人口",
                        "elderly_alone": "是" if members == 1 and age >= 70 else "否",
                    }
                )
    # A few rows as a real source has them, for the quality report: a wrong check digit, a
    # landline where a mobile number belongs, an empty name. Ingestion rejects them by line.
    for i, row in enumerate(rows[7 : 7 * 6 : 7]):
        bad = dict(row)
        if i % 3 == 0:
            bad["id_number"] = row["id_number"][:17] + ("0" if row["id_number"][17] != "0" else "1")
        elif i % 3 == 1:
            bad["phone"], bad["id_number"] = (
                "0576-8888" + str(1000 + i),
                m.id_number("331002", m.birth(30, 60), True),
            )
        else:
            bad["name"], bad["id_number"] = "", m.id_number("331002", m.birth(30, 60), False)
        rows.append(bad)
    return rows


INDUSTRIES = [
    ("制造业", "机械制造"), ("制造业", "塑料制品"), ("制造业", "汽车零部件"), ("批发和零售业", "五金批发"),
    ("住宿和餐饮业", "餐饮"), ("建筑业", "建筑安装"), ("交通运输业", "道路货运"), ("农林牧渔业", "水产养殖"),
    ("信息技术服务业", "软件开发"), ("化学原料和化学制品制造业", "精细化工"),
]  # fmt: skip
TYPES = ["有限责任公司", "有限责任公司", "有限责任公司", "股份有限公司", "个人独资企业", "合伙企业"]


def _enterprise_rows(m: _Maker, places: dict[str, Any], count: int) -> list[dict[str, Any]]:
    rows = []
    villages: list[Region] = places["villages"]
    for i in range(count):
        v = villages[i % len(villages)]
        town = places["up"](v, RegionLevel.township)
        county = v.code[:6]
        sector, trade = m.rng.choice(INDUSTRIES)
        kind = m.rng.choice(TYPES)
        stem = m.rng.choice(m.stems)
        suffix = "有限公司" if "有限" in kind else ("厂" if kind == "个人独资企业" else "商行")
        birth = m.birth(28, 65)
        rows.append(
            {
                "credit_code": m.credit_code(county),
                "name": f"台州{stem}{trade}{suffix}",
                "type": kind,
                "industry": sector,
                "registered_capital": round(
                    m.rng.choice([10, 50, 100, 200, 500, 1000, 3000]) * m.rng.uniform(0.5, 2), 1
                ),
                "established": (REFERENCE_DAY - timedelta(days=m.rng.randrange(200, 9000))).isoformat(),
                "status": m.rng.choice(["存续", "存续", "存续", "在业", "注销"]),
                "county_code": county,
                "township": town.name if town else "",
                "address": f"{v.name}{m.rng.choice(m.stems)}路{m.rng.randrange(1, 500)}号",
                "legal_rep": m.name(),
                "legal_rep_id": m.id_number(county, birth, m.rng.random() < 0.6),
                "legal_rep_phone": m.phone(),
            }
        )
    return rows


SITE_KINDS = [
    ("加油站", "汽油、柴油", (60, 180), "四级"),
    ("液化气供应站", "液化石油气", (10, 50), "三级"),
    ("危化品仓库", "甲醇、丙酮、乙酸乙酯", (50, 800), "二级"),
    ("化工企业", "液氯、硫酸、氢氧化钠", (100, 1500), "一级"),
    ("烟花爆竹经营点", "烟花爆竹", (0.5, 5), "无"),
]


def _site_rows(
    m: _Maker, places: dict[str, Any], enterprises: list[dict[str, Any]], count: int
) -> list[dict[str, Any]]:
    rows = []
    villages: list[Region] = places["villages"]
    for i in range(count):
        v = villages[(i * 7) % len(villages)]
        town = places["up"](v, RegionLevel.township)
        kind, chemicals, (low, high), level = SITE_KINDS[i % len(SITE_KINDS)]
        owner = enterprises[(i * 13) % len(enterprises)]
        lon = (v.centroid_lon or 121.3) + m.rng.uniform(-0.01, 0.01)
        lat = (v.centroid_lat or 28.6) + m.rng.uniform(-0.01, 0.01)
        rows.append(
            {
                "site_id": f"WHP-{v.code[:6]}-{i + 1:04d}",
                "name": f"{v.name}{kind}",
                "enterprise": owner["name"],
                "credit_code": owner["credit_code"],
                "category": kind,
                "chemicals": chemicals,
                "max_storage_t": round(m.rng.uniform(low, high), 1),
                "hazard_level": level if m.rng.random() < 0.7 else "无",
                "lon": round(lon, 6),
                "lat": round(lat, 6),
                "county_code": v.code[:6],
                "township": town.name if town else "",
                "village": v.name,
                "contact": m.name(),
                "contact_phone": m.phone(),
                "last_inspection": (date.today() - timedelta(days=m.rng.randrange(5, 300))).isoformat(),
                "inspection_result": m.rng.choice(["合格", "合格", "合格", "限期整改"]),
            }
        )
    return rows


def _grid_rows(m: _Maker, places: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for g in places["grids"]:
        village, town, county = (
            places["up"](g, lvl) for lvl in (RegionLevel.village, RegionLevel.township, RegionLevel.county)
        )
        households = m.rng.randrange(150, 450)
        rows.append(
            {
                "grid_code": g.code,
                "grid_name": g.name,
                "village": village.name if village else "",
                "township": town.name if town else "",
                "county": county.name if county else "",
                "households": households,
                "residents": int(households * m.rng.uniform(2.2, 3.1)),
                "lon": round(g.centroid_lon or 0, 6),
                "lat": round(g.centroid_lat or 0, 6),
            }
        )
    return rows


# ---- loading ------------------------------------------------------------------------------------


def _actor(session: Session, username: str) -> Actor:
    user = accounts.get_user_by_username(session, username)
    assert user is not None, username
    return accounts.actor_for_user(session, user)


def _register(session: Session, steward: Actor, spec: dict[str, Any]) -> None:
    attrs = dict(spec)
    fields = attrs.pop("fields")
    service.create_dataset(session, steward, owner_org=BUREAU, fields=fields, **attrs)


def load(session: Session, creds: dict[str, Any], *, seed: int = 2021) -> dict[str, Any]:
    """Register, load and share the demo datasets inside the demo's transaction; the consumer's
    data API key goes into `creds["data_platform"]`. Returns what was made."""
    m = _Maker(seed)
    places = _places(session)
    steward, consumer = _actor(session, STEWARD), _actor(session, CONSUMER)
    db: Any = _OneTransaction(session)
    for spec in (POPULATION, ENTERPRISES, HAZARD_SITES, GRID_OVERVIEW):
        _register(session, steward, spec)
    people = _population_rows(m, places)
    firms = _enterprise_rows(m, places, max(40, min(400, len(places["villages"]) * 3)))
    n_sites = max(15, min(80, len(places["villages"])))
    sites_then = _site_rows(m, places, firms, n_sites)
    sites_now = _site_rows(m, places, firms, n_sites)  # the quarterly update: new inspections
    grids = _grid_rows(m, places)
    loaded: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="civicgrid-demo-data-") as tmp:
        folder = Path(tmp)
        for name, rows, mode in (
            ("village-population", people, "replace"),
            ("enterprises", firms, "replace"),
            ("hazardous-sites", sites_then, "replace"),
            ("hazardous-sites", sites_now, "replace"),
            ("grid-overview", grids, "replace"),
        ):
            path = _write_csv(folder, f"{name}-{len(loaded)}", rows)
            dv = ingest.ingest(db, steward, name, path=path, mode=mode, source_name=f"{name}.csv")
            loaded[name] = dv.rows
    # The first load of the sites was a year and more ago: past its 365-day retention.
    first = session.scalar(
        select(DataVersion).where(
            DataVersion.dataset_id == service.get_dataset(session, "hazardous-sites").id,
            DataVersion.version == 1,
        )
    )
    assert first is not None
    first.created_at = first.finished_at = utcnow() - timedelta(days=400)
    session.flush()

    until = access.today() + timedelta(days=180)
    # approved, narrowed to the consumer's county, the safety contact's name in clear
    app = access.apply(
        session,
        consumer,
        dataset="hazardous-sites",
        purpose="市场监管部门会同应急管理部门开展危险化学品经营场所联合检查",
        fields=[f["name"] for f in HAZARD_SITES["fields"]],
        until=until,
        row_filter=[{"field": "county_code", "op": "eq", "value": CONSUMER_COUNTY}],
    )
    access.approve(
        session,
        steward,
        app.id,
        fields=[f["name"] for f in HAZARD_SITES["fields"] if f["name"] != "credit_code"],
        clear_fields=["contact"],
        quota_rows_per_day=20_000,
        reason="同意用于联合检查；安全负责人电话保持脱敏",
    )
    # approved at once: unconditionally shared, no personal field asked for
    access.apply(
        session,
        consumer,
        dataset="enterprises",
        purpose="核对辖区市场主体登记状态，开展双随机抽查",
        fields=[
            "credit_code",
            "name",
            "type",
            "industry",
            "registered_capital",
            "established",
            "status",
            "township",
        ],
        until=until,
    )
    # waiting in the bureau steward's approvals inbox
    access.apply(
        session,
        consumer,
        dataset="village-population",
        purpose="独居老人食品安全宣传与关爱走访，核对辖区独居老人名单",
        fields=["name", "age", "phone", "township", "village", "elderly_alone"],
        until=until,
        row_filter=[{"field": "elderly_alone", "op": "eq", "value": True}],
        mode="api",
    )
    key, clear = keys.create_key(session, consumer, name="危化品联合检查系统", days=365)
    _usage_history(session, key.id, m)
    lifecycle.check_retention(session)  # asks for the destruction of the sites' first load
    made = {"api_key": clear, "key_name": key.name, "datasets": loaded}
    creds["data_platform"] = made
    return made


def _usage_history(session: Session, key_id: int, m: _Maker) -> None:
    """Two weeks of metered use by the demo key, so the usage charts have a shape. Synthetic
    meter rows (no audit records: these reads did not happen)."""
    today = access.today()
    ids = {name: service.get_dataset(session, name).id for name in ("hazardous-sites", "enterprises")}
    rows = []
    for back in range(14, 0, -1):
        day = today - timedelta(days=back)
        weekend = day.weekday() >= 5
        for name, base in (("hazardous-sites", 40), ("enterprises", 25)):
            calls = 0 if weekend else m.rng.randrange(base // 2, base * 2)
            if calls:
                rows.append(
                    {"key_id": key_id, "dataset_id": ids[name], "day": day, "channel": "api", "calls": calls,
                     "rows": calls * m.rng.randrange(20, 100)}
                )  # fmt: skip
    if rows:
        session.execute(insert(Usage), rows)
