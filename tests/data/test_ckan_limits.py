"""Anonymous CKAN calls are limited per client address; CKAN routes have unique operation ids."""

# ruff: noqa: F811 (tests take the imported ckan_world fixture as a parameter)

from __future__ import annotations

import warnings

import pytest
from fastapi.testclient import TestClient

from tests.data.test_ckan import CkanWorld, ckan_world  # noqa: F401 (the fixture)


def test_anonymous_calls_are_limited_per_address(
    ckan_world: CkanWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CIVICGRID_CKAN_ANONYMOUS_PER_MINUTE", "3")
    w = ckan_world
    for _ in range(3):
        assert w.get("package_list").status_code == 200
    res = w.get("package_list")
    assert res.status_code == 429
    assert 1 <= int(res.headers["Retry-After"]) <= 20
    body = res.json()
    assert body["success"] is False and body["error"]["__type"] == "Authorization Error"
    assert "API" in body["error"]["message"]
    assert "/api/3/action/help_show?name=package_list" in body["help"]
    # POST and the unversioned alias share the address's bucket.
    assert w.post("status_show", {}).status_code == 429
    assert w.client.get("/api/action/status_show").status_code == 429
    # A caller with a valid key is not held by the anonymous limit.
    assert w.get("package_list", key=w.key).status_code == 200


def test_wrong_keys_count_against_the_address(ckan_world: CkanWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CIVICGRID_CKAN_ANONYMOUS_PER_MINUTE", "2")
    w = ckan_world
    assert w.get("package_list", key="cgk_wrong1").status_code == 403
    assert w.get("package_list", key="cgk_wrong2").status_code == 403
    assert w.get("package_list", key="cgk_wrong3").status_code == 429


def test_ckan_routes_have_unique_operation_ids(client: TestClient) -> None:
    client.app.openapi_schema = None  # type: ignore[attr-defined]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # FastAPI warns on duplicate operation ids
        schema = client.get("/openapi.json").json()
    ops = schema["paths"]["/api/3/action/{action}"]
    assert {m: ops[m]["operationId"] for m in ("get", "post")} == {
        "get": "ckan_action_get",
        "post": "ckan_action_post",
    }
    ids = [
        op["operationId"] for path in schema["paths"].values() for op in path.values() if "operationId" in op
    ]
    assert len(ids) == len(set(ids))
