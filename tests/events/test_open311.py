"""Open311 GeoReport v2 conformance: the spec's documented shapes in JSON and XML, every filter,
the workflow's states seen as open/closed, tokens, and every refusal in the spec's error format
with nothing written."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update

from civicgrid.accounts import service as accounts
from civicgrid.accounts.permissions import Role
from civicgrid.core.audit import AuditRecord
from civicgrid.core.db import utcnow
from civicgrid.events import service as events
from civicgrid.events.models import Channel, Event, TimelineEntry
from civicgrid.events.open311 import service as open311
from tests.factories import login_headers, make_user

V2 = "/open311/v2"
# Field lists and their order as the spec's examples give them.
SERVICE_FIELDS = ["service_code", "service_name", "description", "metadata", "type", "keywords", "group"]
ATTRIBUTE_FIELDS = [
    "variable",
    "code",
    "datatype",
    "required",
    "datatype_description",
    "order",
    "description",
    "values",
]
CREATED_FIELDS = ["service_request_id", "service_notice", "account_id"]
REQUEST_FIELDS = [
    "service_request_id",
    "status",
    "status_notes",
    "service_name",
    "service_code",
    "description",
    "agency_responsible",
    "service_notice",
    "requested_datetime",
    "updated_datetime",
    "expected_datetime",
    "address",
    "address_id",
    "zipcode",
    "lat",
    "long",
    "media_url",
]
ENDPOINT_FIELDS = ["specification", "url", "changeset", "type", "formats"]
DATATYPES = {"string", "number", "datetime", "text", "singlevaluelist", "multivaluelist"}
GARBAGE = {"service_code": "0102", "lat": "2.5", "long": "2.5", "description": "小区门口有暴露垃圾"}


@pytest.fixture
def keys(world) -> dict[str, str]:
    """Personal access tokens: the Open311 client (a resident account of the city bureau),
    a dispatcher, and a data steward (who may not report events)."""
    out = {}
    with world.db.session() as s:
        make_user(s, world.tree, "open311", Role.resident, "bureau")
        make_user(s, world.tree, "steward", Role.data_steward, "bureau")
        for name in ("open311", "dispatcher", "steward"):
            _row, out[name] = accounts.create_api_token(s, world.actor(s, name), name="open311", days=365)
    return out


def post(client, key: str | None, fmt: str = "json", **fields: Any):
    data = {**fields}
    if key is not None:
        data["api_key"] = key
    return client.post(f"{V2}/requests.{fmt}", data=data)


def report(client, key: str, **fields: Any) -> str:
    res = post(client, key, **{**GARBAGE, **fields})
    assert res.status_code == 201, res.text
    return res.json()[0]["service_request_id"]


def one(client, number: str, **params: Any) -> dict[str, Any]:
    res = client.get(f"{V2}/requests/{number}.json", params=params)
    assert res.status_code == 200, res.text
    return res.json()[0]


def parse(res) -> ET.Element:
    assert res.headers["content-type"].startswith("text/xml"), res.headers["content-type"]
    assert res.text.startswith('<?xml version="1.0" encoding="utf-8"?>')
    return ET.fromstring(res.content)


def counts(world) -> tuple[int, int, int]:
    with world.db.session() as s:
        return (
            s.scalar(select(func.count(Event.id))),
            s.scalar(select(func.count(TimelineEntry.id))),
            s.scalar(select(func.count(AuditRecord.id))),
        )


# ---- discovery, services, service definitions ------------------------------------------


def test_discovery_in_json_and_xml(client, world):
    doc = client.get(f"{V2}/discovery.json").json()
    assert list(doc) == ["changeset", "contact", "key_service", "endpoints"]
    (endpoint,) = doc["endpoints"]
    assert list(endpoint) == ENDPOINT_FIELDS
    assert endpoint["specification"] == "http://wiki.open311.org/GeoReport_v2"
    assert endpoint["url"] == "http://testserver/open311/v2" and endpoint["type"] == "production"
    assert set(endpoint["formats"]) == {"text/xml", "application/json"}
    assert "/account" in doc["key_service"]

    root = parse(client.get(f"{V2}/discovery.xml"))
    assert root.tag == "discovery"
    assert [c.tag for c in root] == ["changeset", "contact", "key_service", "endpoints"]
    endpoint_el = root.find("endpoints/endpoint")
    assert endpoint_el is not None and [c.tag for c in endpoint_el] == ENDPOINT_FIELDS
    assert {f.text for f in endpoint_el.findall("formats/format")} == {"text/xml", "application/json"}


def test_services_are_the_active_sub_categories(client, world):
    res = client.get(f"{V2}/services.json")
    assert res.status_code == 200 and res.headers["content-type"] == "application/json"
    services = res.json()
    assert all(list(s) == SERVICE_FIELDS for s in services)
    by_code = {s["service_code"]: s for s in services}
    assert "01" not in by_code  # a class (大类) is a group, not a service
    garbage = by_code["0102"]
    assert garbage["service_name"] == "暴露垃圾" and garbage["group"] == "市容环境"
    assert garbage["metadata"] is True and garbage["type"] == "realtime"
    assert "4 个工作小时" in garbage["description"], garbage["description"]
    assert client.get(f"{V2}/services").json() == services  # no suffix: JSON

    root = parse(client.get(f"{V2}/services.xml"))
    assert root.tag == "services" and {c.tag for c in root} == {"service"}
    assert len(root) == len(services)
    first = root[0]
    assert [c.tag for c in first] == SERVICE_FIELDS
    assert first.findtext("service_code") == services[0]["service_code"]
    assert first.findtext("metadata") == "true"

    english = client.get(f"{V2}/services.json", headers={"Accept-Language": "en"}).json()
    assert {s["service_code"]: s for s in english}["0102"]["service_name"] == "Exposed rubbish"


def test_inactive_categories_are_not_offered(client, world):
    with world.db.session() as s:
        events.update_category(s, world.actor(s, "admin"), "0104", active=False)
    codes = {s["service_code"] for s in client.get(f"{V2}/services.json").json()}
    assert "0104" not in codes and "0102" in codes
    assert client.get(f"{V2}/services/0104.json").status_code == 404


def test_service_definition_in_json_and_xml(client, world):
    definition = client.get(f"{V2}/services/1001.json").json()  # 邻里纠纷, a dispute
    assert list(definition) == ["service_code", "attributes"] and definition["service_code"] == "1001"
    attrs = {a["code"]: a for a in definition["attributes"]}
    assert all(list(a) == ATTRIBUTE_FIELDS for a in definition["attributes"])
    assert all(a["datatype"] in DATATYPES for a in attrs.values())
    assert [a["order"] for a in definition["attributes"]] == sorted(a["order"] for a in attrs.values())
    assert attrs["deadline"]["variable"] is False and "10 个工作日" in attrs["deadline"]["description"]
    assert attrs["parties"]["required"] is True and attrs["parties"]["datatype"] == "number"
    assert attrs["when_seen"]["datatype"] == "multivaluelist"
    assert {v["key"] for v in attrs["severity_hint"]["values"]} == {"low", "medium", "high"}
    assert all(set(v) == {"key", "name"} for v in attrs["callback"]["values"])
    plain = {a["code"] for a in client.get(f"{V2}/services/0102.json").json()["attributes"]}
    assert "parties" not in plain and "severity_hint" in plain

    root = parse(client.get(f"{V2}/services/1001.xml"))
    assert root.tag == "service_definition"
    assert [c.tag for c in root] == ["service_code", "attributes"]
    attr_els = root.findall("attributes/attribute")
    assert len(attr_els) == len(attrs) and all([c.tag for c in a] == ATTRIBUTE_FIELDS for a in attr_els)
    severity = next(a for a in attr_els if a.findtext("code") == "severity_hint")
    assert [[c.tag for c in v] for v in severity.findall("values/value")] == [["key", "name"]] * 3
    assert severity.findtext("required") == "false" and severity.findtext("datatype_description") == ""


# ---- creating requests ------------------------------------------------------------------


def test_post_request_creates_an_event_json(client, world, keys):
    res = post(
        client,
        keys["open311"],
        **GARBAGE,
        first_name="三",
        last_name="张",
        phone="13812345678",
        email="zhang@example.com",
        account_id="acct-7",
        device_id="dev-1",
        address_string="幸福路1号",
        address_id="addr-42",
        media_url="https://img.example.com/1.jpg",
        **{"attribute[severity_hint]": "high", "attribute[when_seen][]": ["night", "evening"]},
    )
    assert res.status_code == 201, res.text
    body = res.json()
    assert isinstance(body, list) and len(body) == 1 and list(body[0]) == CREATED_FIELDS
    number = body[0]["service_request_id"]
    assert body[0]["account_id"] == "acct-7" and "4 个工作小时" in body[0]["service_notice"]
    with world.db.session() as s:
        event = s.scalar(select(Event).where(Event.number == number))
        assert event is not None and event.channel == Channel.open311
        assert event.reporter_name == "张三" and event.reporter_phone == "13812345678"
        assert event.address == "幸福路1号" and event.external_id
        assert event.grid_id == world.tree.regions["grid1a"].id
        entries = s.scalars(
            select(TimelineEntry).where(TimelineEntry.event_id == event.id).order_by(TimelineEntry.seq)
        ).all()
        assert [e.action for e in entries] == ["report", "open311"]
        data = json.loads(entries[1].data)
        assert data["attributes"] == {"severity_hint": "high", "when_seen": ["night", "evening"]}
        assert data["media_url"] == "https://img.example.com/1.jpg" and data["device_id"] == "dev-1"
        assert "zhang@example.com" not in entries[1].data  # e-mail is not kept
        assert "severity_hint: high" in entries[1].note
    got = one(client, number)
    assert got["media_url"] == "https://img.example.com/1.jpg" and got["address"] == "幸福路1号"
    assert got["address_id"] == "addr-42" and got["zipcode"] is None
    assert got["lat"] == 2.5 and got["long"] == 2.5 and got["status"] == "open"


def test_post_request_xml_and_multipart(client, world, keys):
    res = post(client, keys["open311"], "xml", **GARBAGE)
    assert res.status_code == 201
    root = parse(res)
    assert root.tag == "service_requests"
    request = root.find("request")
    assert request is not None and [c.tag for c in request] == CREATED_FIELDS
    assert request.findtext("service_request_id", "").startswith("331001-")
    assert request.findtext("account_id") == ""

    multipart = client.post(
        f"{V2}/requests.json",
        data={**GARBAGE, "api_key": keys["open311"], "attribute[parties]": "2", "service_code": "1001"},
        files={"photo": ("note.txt", b"not a photo", "text/plain")},
    )
    assert multipart.status_code == 201, multipart.text
    # The key may also come in the query string; without a description the service name says it.
    res = client.post(f"{V2}/requests.json?api_key={keys['open311']}", data={**GARBAGE, "description": ""})
    assert res.status_code == 201, res.text
    assert one(client, res.json()[0]["service_request_id"])["description"] == "暴露垃圾"


def test_jurisdiction_id_is_the_city(client, world, keys):
    for jurisdiction in ("331000000000", "台州市", "taizhou"):
        assert client.get(f"{V2}/services.json", params={"jurisdiction_id": jurisdiction}).status_code == 200
        res = post(client, keys["open311"], jurisdiction_id=jurisdiction, **GARBAGE)
        assert res.status_code == 201, res.text


# ---- reading requests -------------------------------------------------------------------


def test_get_requests_filters(client, world, keys, monkeypatch):
    key = keys["open311"]
    a = report(client, key)
    b = report(client, key, service_code="0501", description="早市占道经营")
    c = report(client, key, service_code="0504", description="消防通道机动车乱停放")
    old = report(client, key, description="很久以前的垃圾")
    with world.db.session() as s:
        s.execute(update(Event).where(Event.number == old).values(reported_at=utcnow() - timedelta(days=100)))
    dispatcher = login_headers(client, "dispatcher")
    res = client.post(
        f"/api/v1/events/{c}/reject", headers=dispatcher, json={"reason": "非本辖区", "basis": "职责清单"}
    )
    assert res.status_code == 200, res.text

    def numbers(**params: Any) -> list[str]:
        res = client.get(f"{V2}/requests.json", params=params)
        assert res.status_code == 200, res.text
        rows = res.json()
        assert all(list(r) == REQUEST_FIELDS for r in rows)
        return [r["service_request_id"] for r in rows]

    assert numbers() == [c, b, a]  # default: the last 90 days, newest first
    assert client.get(f"{V2}/requests").json() == client.get(f"{V2}/requests.json").json()
    assert sorted(numbers(service_request_id=f"{a},{old}")) == sorted([a, old])  # ids override the dates
    assert numbers(service_request_id=f"{a}", status="closed") == [a]
    assert numbers(service_code="0501,0504") == [c, b]
    assert numbers(status="closed") == [c]
    assert numbers(status="open") == [b, a]
    assert numbers(status="open,closed") == [c, b, a]
    now = utcnow()
    start = (now - timedelta(days=120)).strftime("%Y-%m-%dT%H:%M:%SZ")
    end = (now - timedelta(days=50)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert numbers(start_date=start, end_date=end) == [old]
    assert numbers(start_date=start) == [old]  # a start alone covers the 90 days after it
    assert numbers(end_date=end) == [old]  # an end alone covers the 90 days before it
    tomorrow = (now + timedelta(days=1)).astimezone(open311.CST).date().isoformat()
    assert numbers(start_date=tomorrow) == []

    monkeypatch.setattr(open311, "MAX_ROWS", 2)
    assert numbers() == [c, b]

    root = parse(client.get(f"{V2}/requests.xml", params={"status": "closed"}))
    assert root.tag == "service_requests" and [r.tag for r in root] == ["request"]
    assert [c_.tag for c_ in root[0]] == REQUEST_FIELDS
    assert root[0].findtext("status") == "closed" and root[0].findtext("status_notes") == "非本辖区"
    assert root[0].findtext("requested_datetime", "").endswith("+08:00")


def test_status_follows_the_workflow(client, world, keys):
    number = report(client, keys["open311"])
    got = one(client, number)
    assert got["status"] == "open" and got["agency_responsible"] == "镇1四平台"
    assert got["expected_datetime"] is None and got["requested_datetime"].endswith("+08:00")
    dispatcher = login_headers(client, "dispatcher")
    handler = login_headers(client, "handler")
    steps = [
        (dispatcher, "accept", {}),
        (dispatcher, "dispatch", {}),
        (handler, "start", {}),
        (handler, "handle", {"result": "已清运，联系人13912345678"}),
        (login_headers(client, "grid_worker"), "verify", {"passed": True}),
    ]
    for headers, action, body in steps:
        res = client.post(f"/api/v1/events/{number}/{action}", headers=headers, json=body)
        assert res.status_code == 200, (action, res.text)
        assert one(client, number)["status"] == "open", action
    got = one(client, number)
    assert got["agency_responsible"] == "镇1综合执法中队"
    assert got["status_notes"] == "已清运，联系人139****5678"  # the public sees the number masked
    assert got["expected_datetime"] is not None and got["expected_datetime"].endswith("+08:00")
    res = client.post(f"/api/v1/events/{number}/close", headers=dispatcher, json={"note": "办结"})
    assert res.status_code == 200
    got = one(client, number)
    assert got["status"] == "closed" and got["status_notes"] == "办结"
    assert got["updated_datetime"] >= got["requested_datetime"]

    # A merged request is closed and says where it went.
    first, second = report(client, keys["open311"]), report(client, keys["open311"])
    res = client.post(f"/api/v1/events/{second}/merge", headers=dispatcher, json={"into_number": first})
    assert res.status_code == 200, res.text
    merged = one(client, second)
    assert merged["status"] == "closed" and first in merged["status_notes"]


def test_tokens_answer_with_the_request_id(client, world, keys):
    number = report(client, keys["open311"])
    with world.db.session() as s:
        token = s.scalar(select(Event.external_id).where(Event.number == number))
    assert token
    res = client.get(f"{V2}/tokens/{token}.json")
    assert res.status_code == 200 and res.json() == [{"service_request_id": number, "token": token}]
    root = parse(client.get(f"{V2}/tokens/{token}.xml"))
    assert root.tag == "service_requests"
    assert [(c.tag, c.text) for c in root[0]] == [("service_request_id", number), ("token", token)]
    assert client.get(f"{V2}/tokens/nope.json").status_code == 404


def test_public_output_masks_personal_data(client, world, keys):
    text = "门口垃圾，联系张三 13812345678，身份证 110101199003071234"
    number = report(
        client, keys["open311"], description=text, first_name="三", last_name="张", phone="13812345678"
    )
    dispute = report(
        client,
        keys["open311"],
        service_code="1001",
        description="邻居噪音纠纷",
        **{"attribute[parties]": "2"},
    )

    public = client.get(f"{V2}/requests.json").json()
    assert [r["service_request_id"] for r in public] == [number]  # disputes are not public
    assert public[0]["description"] == "门口垃圾，联系张三 138****5678，身份证 110101********1234"
    assert "13812345678" not in client.get(f"{V2}/requests.xml").text
    assert client.get(f"{V2}/requests/{dispute}.json").status_code == 404

    # A reader whose role shows them the event reads it as CivicGrid shows it.
    for key in (keys["dispatcher"], keys["open311"]):
        rows = {
            r["service_request_id"]: r
            for r in client.get(f"{V2}/requests.json", params={"api_key": key}).json()
        }
        assert set(rows) == {number, dispute}
        assert rows[number]["description"] == text
    # The steward sees only what the public sees.
    rows = client.get(f"{V2}/requests.json", params={"api_key": keys["steward"]}).json()
    assert [r["description"] for r in rows] == [public[0]["description"]]


# ---- refusals ---------------------------------------------------------------------------

POST_ERRORS = [
    ("no key", None, {}, 403, "api_key"),
    ("bad key", "cg_wrong", {}, 403, "api_key"),
    ("role may not report", "steward", {}, 403, "api_key"),
    ("unknown service", "open311", {"service_code": "9999"}, 400, "9999"),
    ("a class is no service", "open311", {"service_code": "01"}, 400, "01"),
    ("no service", "open311", {"service_code": ""}, 400, "service_code"),
    ("no location", "open311", {"lat": "", "long": ""}, 400, "lat"),
    (
        "address only",
        "open311",
        {"lat": "", "long": "", "address_string": "幸福路1号"},
        400,
        "address_string",
    ),
    ("lat not a number", "open311", {"lat": "north"}, 400, "lat"),
    ("outside", "open311", {"lat": "50", "long": "50"}, 400, "辖区"),
    ("bad attribute value", "open311", {"attribute[severity_hint]": "apocalyptic"}, 400, "apocalyptic"),
    ("bad multivalue", "open311", {"attribute[when_seen][]": ["night", "teatime"]}, 400, "teatime"),
    ("two values for one", "open311", {"attribute[severity_hint]": ["low", "high"]}, 400, "severity_hint"),
    ("unknown attribute", "open311", {"attribute[colour]": "red"}, 400, "colour"),
    ("bad datetime attribute", "open311", {"attribute[first_seen]": "last week"}, 400, "first_seen"),
    ("required attribute", "open311", {"service_code": "1001"}, 400, "parties"),
    ("bad number", "open311", {"service_code": "1001", "attribute[parties]": "1.5"}, 400, "parties"),
    ("bad media_url", "open311", {"media_url": "javascript:alert(1)"}, 400, "media_url"),
    ("bad jurisdiction", "open311", {"jurisdiction_id": "宁波市"}, 404, "宁波市"),
]


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_post_errors_are_in_the_spec_format_and_write_nothing(client, world, keys, fmt):
    before = counts(world)
    for name, who, fields, code, needle in POST_ERRORS:
        key = keys.get(who, who) if who else None
        res = post(client, key, fmt, **{**GARBAGE, **fields})
        assert res.status_code == code, (name, res.text)
        if fmt == "json":
            assert res.headers["content-type"] == "application/json", name
            (error,) = res.json()
            assert list(error) == ["code", "description"] and error["code"] == code, name
            description = error["description"]
        else:
            root = parse(res)
            assert root.tag == "errors" and [c.tag for c in root] == ["error"], name
            assert [c.tag for c in root[0]] == ["code", "description"], name
            assert root[0].findtext("code") == str(code), name
            description = root[0].findtext("description") or ""
        assert needle in description, (name, description)
    assert counts(world) == before  # no event, no timeline entry, no audit record


GET_ERRORS = [
    ("/requests", {"start_date": "yesterday"}, 400, "start_date"),
    ("/requests", {"end_date": "2026-13-45T00:00:00Z"}, 400, "end_date"),
    ("/requests", {"start_date": "2026-01-01", "end_date": "2026-06-01"}, 400, "90"),
    ("/requests", {"start_date": "2026-06-01", "end_date": "2026-05-01"}, 400, "end_date"),
    ("/requests", {"status": "pending"}, 400, "status"),
    ("/requests", {"service_code": "0102,9999"}, 400, "9999"),
    ("/requests", {"api_key": "cg_wrong"}, 403, "api_key"),
    ("/requests", {"jurisdiction_id": "宁波市"}, 404, "宁波市"),
    ("/requests/331001-20000101-00001", {}, 404, "331001-20000101-00001"),
    ("/services", {"jurisdiction_id": "nowhere"}, 404, "nowhere"),
    ("/services/9999", {}, 404, "9999"),
    ("/tokens/nothing", {}, 404, "nothing"),
    ("/no-such-thing", {}, 404, "未找到"),
]


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_get_errors_are_in_the_spec_format(client, world, fmt):
    for path, params, code, needle in GET_ERRORS:
        res = client.get(f"{V2}{path}.{fmt}", params=params)
        assert res.status_code == code, (path, params, res.text)
        if fmt == "json":
            (error,) = res.json()
            assert error["code"] == code and needle in error["description"], (path, error)
        else:
            root = parse(res)
            assert root.tag == "errors" and root.findtext("error/code") == str(code)
            assert needle in (root.findtext("error/description") or ""), (path, res.text)


def test_other_errors_keep_the_spec_format(client, world):
    res = client.post(f"{V2}/services.json")
    assert res.status_code == 405 and res.json()[0]["code"] == 405
    res = client.delete(f"{V2}/requests.xml")
    assert res.status_code == 405 and parse(res).findtext("error/code") == "405"
    res = client.get(f"{V2}/services.csv")
    assert res.status_code == 404 and "csv" in res.json()[0]["description"]
    res = client.get(
        f"{V2}/services.json", headers={"Accept-Language": "en"}, params={"jurisdiction_id": "x"}
    )
    assert res.json() == [{"code": 404, "description": "Unknown jurisdiction_id x."}]
    res = client.post(f"{V2}/requests.json", json=GARBAGE)  # JSON is not the spec's encoding
    assert res.status_code == 403 and res.json()[0]["code"] == 403


def test_openapi_lists_the_open311_routes(client, world):
    paths = client.get("/openapi.json").json()["paths"]
    for path, method in [
        ("/open311/v2/discovery.{format}", "get"),
        ("/open311/v2/services.{format}", "get"),
        ("/open311/v2/services/{service_code}.{format}", "get"),
        ("/open311/v2/requests.{format}", "get"),
        ("/open311/v2/requests.{format}", "post"),
        ("/open311/v2/requests/{service_request_id}.{format}", "get"),
        ("/open311/v2/tokens/{token}.{format}", "get"),
    ]:
        assert method in paths.get(path, {}), path
    post_op = paths["/open311/v2/requests.{format}"]["post"]
    form = post_op["requestBody"]["content"]
    assert "application/x-www-form-urlencoded" in form or "multipart/form-data" in form
    assert "text/xml" in post_op["responses"]["201"]["content"]
    assert not [p for p in paths if p.startswith("/open311/") and "{rest" in p]
