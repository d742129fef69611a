"""Unified search: Chinese queries find Chinese datasets, ranked, faceted, within what one may see."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from civicgrid.data import search, service
from tests.data.conftest import DataWorld
from tests.factories import login_headers

DATASETS: list[dict[str, Any]] = [
    {
        "name": "village-population",
        "title": "各村常住人口统计",
        "description": "按行政村统计的常住人口与户籍人口",
        "tags": ["人口", "民政"],
        "theme": "people",
        "share_class": "conditional",
        "share_condition": "用于基层治理",
        "open_class": "closed",
    },
    {
        "name": "census-summary",
        "title": "第七次人口普查汇总",
        "title_en": "Seventh population census summary",
        "description": "全市人口普查主要数据",
        "tags": ["人口", "统计"],
        "theme": "people",
        "share_class": "unconditional",
        "open_class": "open",
    },
    {
        "name": "hazardous-sites",
        "title": "危险化学品经营企业名录",
        "description": "危化品经营许可企业及其地址",
        "tags": ["安全生产", "企业"],
        "theme": "thing",
        "share_class": "conditional",
        "share_condition": "用于基层治理",
        "open_class": "closed",
    },
    {
        "name": "bus-stops",
        "title": "公交站点",
        "description": "全市公交站点位置",
        "tags": ["交通"],
        "theme": "land",
        "share_class": "unconditional",
        "open_class": "open",
        "fields": [
            {"name": "stop_name", "title": "站点名称"},
            {"name": "served_people", "title": "服务人口"},
        ],
    },
    {
        "name": "key-persons",
        "title": "重点人员名单",
        "description": "涉及人口管理的重点人员",
        "tags": ["人口"],
        "theme": "people",
        "share_class": "none",
        "share_condition": "涉及个人隐私",
        "open_class": "closed",
    },
]


@pytest.fixture
def catalogue(data_world: DataWorld) -> DataWorld:
    with data_world.db.session() as s:
        steward = data_world.actor(s, "steward")
        for spec in DATASETS:
            attrs = {"grade": "general", "fields": [{"name": "value", "title": "数值"}]} | spec
            service.create_dataset(s, steward, **attrs)
    return data_world


def names(result: search.Result) -> list[str]:
    return [h.doc.name for h in result.hits]


def test_chinese_query_finds_and_ranks_within_visibility(catalogue: DataWorld) -> None:
    with catalogue.db.session() as s:
        anonymous = search.search(s, None, "人口")
        consumer = search.search(s, catalogue.actor(s, "consumer"), "人口")
        owner = search.search(s, catalogue.actor(s, "steward"), "人口")
    assert names(anonymous) == ["census-summary", "bus-stops"]  # open only; a title beats a field title
    # the consumer also sees shareable datasets, not the unshared one of another org
    assert names(consumer)[:2] == ["village-population", "census-summary"] or names(consumer)[:2] == [
        "census-summary",
        "village-population",
    ]
    assert set(names(consumer)) == {"village-population", "census-summary", "bus-stops"}
    assert names(consumer)[-1] == "bus-stops"
    assert "key-persons" in names(owner)  # its own org's dataset, even if not shared
    assert all(h.score > 0 for h in consumer.hits)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("危险化学品", "hazardous-sites"),  # a domain word kept whole
        ("危化品", "hazardous-sites"),  # the short form, from the description
        ("普查", "census-summary"),
        ("census", "census-summary"),  # English titles are indexed too
        ("served_people", "bus-stops"),  # a field name
        ("服务人口", "bus-stops"),  # a field title
        ("安全生产", "hazardous-sites"),  # a tag
    ],
)
def test_titles_descriptions_tags_and_field_names_are_searched(
    catalogue: DataWorld, query: str, expected: str
) -> None:
    with catalogue.db.session() as s:
        result = search.search(s, catalogue.actor(s, "consumer"), query)
    assert names(result)[0] == expected


def test_facets_count_matches_and_filters_narrow(catalogue: DataWorld) -> None:
    with catalogue.db.session() as s:
        consumer = catalogue.actor(s, "consumer")
        everything = search.search(s, consumer, "")
        people = search.search(s, consumer, "人口", filters={"theme": "people"})
        tagged = search.search(s, consumer, "", filters={"tag": "统计"})
    assert everything.total == 4
    theme = {f["value"]: f["count"] for f in everything.facets["theme"]}
    assert theme == {"people": 2, "thing": 1, "land": 1}
    assert {f["value"]: f["count"] for f in everything.facets["share_class"]} == {
        "conditional": 2,
        "unconditional": 2,
    }
    assert everything.facets["org"][0]["label"] == "县1市场监管局"
    assert names(people) == ["village-population", "census-summary"] or set(names(people)) == {
        "village-population",
        "census-summary",
    }
    # the theme facet still shows the other themes the query matched, to widen again
    assert {f["value"] for f in people.facets["theme"]} == {"people", "land"}
    assert names(tagged) == ["census-summary"]
    assert {f["value"] for f in tagged.facets["tag"]} >= {"人口", "统计", "交通"}


def test_index_follows_catalogue_changes(catalogue: DataWorld) -> None:
    with catalogue.db.session() as s:
        assert search.search(s, None, "地铁").total == 0
        service.update_dataset(s, catalogue.actor(s, "steward"), "bus-stops", title="公交与地铁站点")
    with catalogue.db.session() as s:
        assert names(search.search(s, None, "地铁")) == ["bus-stops"]


def test_search_api_anonymous_and_signed_in(catalogue: DataWorld, client: TestClient) -> None:
    anon = client.get("/api/v1/data/search", params={"q": "人口"})
    assert anon.status_code == 200
    body = anon.json()
    assert [i["name"] for i in body["items"]] == ["census-summary", "bus-stops"] and body["total"] == 2
    assert "人口" in body["terms"]
    signed = client.get(
        "/api/v1/data/search",
        params={"q": "人口", "theme": "people", "size": 1},
        headers=login_headers(client, "consumer"),
    ).json()
    assert signed["total"] == 2 and len(signed["items"]) == 1
    assert {f["value"] for f in signed["facets"]["theme"]} == {"people", "land"}
    bad = client.get("/api/v1/data/search", params={"theme": "planets"})
    assert bad.status_code == 422
