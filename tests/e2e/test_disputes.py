"""Journey, in the Chinese UI: a grid worker's report of a neighbour dispute waits on the township
mediator's workbench; the mediator takes it as a mediation case (linked to the event), records a
mediation round and the agreement, and opens the 人民调解协议书 PDF, whose text is checked. The
cockpit's 镇村化解率 panel for the county moves with the new agreement."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from pypdf import PdfReader

from tests.e2e.conftest import Server, log_in

pytestmark = pytest.mark.e2e
PANEL = "disputes.local_resolution"


def _prepare(server: Server) -> dict[str, Any]:
    """A neighbour-dispute event (1001) reported by the grid worker in a grid of the mediator's
    township; the county the cockpit panel is read for."""
    from shapely.geometry import shape

    from civicgrid.accounts import service as accounts
    from civicgrid.core.auth import SYSTEM
    from civicgrid.core.config import Settings
    from civicgrid.core.db import Database
    from civicgrid.events import service as events
    from civicgrid.events.models import Channel
    from civicgrid.regions import service as regions

    db = Database(Settings(data_dir=server.data_dir).resolved_database_url)
    try:
        with db.session() as s:
            events.seed_catalogue(s, SYSTEM)
            worker = accounts.get_user_by_username(s, "gridworker")
            mediator = accounts.get_user_by_username(s, "mediator")
            assert worker is not None and mediator is not None
            grid = regions.grids_of_worker(s, worker.id)[0]
            p = shape(json.loads(grid.geometry)).representative_point()
            event = events.create_event(
                s,
                accounts.actor_for_user(s, worker),
                category_code="1001",
                lon=p.x,
                lat=p.y,
                description="张家与王家因院墙排水沟改道发生争吵，双方情绪激动。",
                title="院墙排水沟邻里纠纷",
                channel=Channel.web,
            )
            town = regions.get(s, mediator.memberships[0].org.region_id)
            return {
                "event": event.number,
                "county": town.code[:6] + "000000",
                "org": mediator.memberships[0].org.name,
            }
    finally:
        db.dispose()


def _panel(page: Any, server: Server, county: str) -> Any:
    r = page.request.get(f"{server.url}/api/v1/cockpit/{county}/panels/{PANEL}")
    assert r.ok, r.text()
    return r.json()["rows"][0][0]


def _switch_user(page: Any, server: Server, username: str) -> None:
    page.context.clear_cookies()
    log_in(page, server, username)
    page.wait_for_url(server.url + "/")


def test_mediator_takes_an_event_mediates_and_prints_the_agreement(page, server, tmp_path):
    facts = _prepare(server)
    shots = Path(tmp_path)

    _switch_user(page, server, "leader")
    before = _panel(page, server, facts["county"])

    _switch_user(page, server, "mediator")
    page.click("nav.mainnav >> text=矛盾调解")
    page.wait_for_url("**/disputes/work")
    assert page.locator("h1").inner_text() == "调解工作台"
    page.click(f"[data-take='{facts['event']}']")
    page.wait_for_url(f"**/disputes/new?event={facts['event']}")
    assert page.input_value("#event_number") == facts["event"]
    names = page.locator("input[name=party_name]")
    names.nth(0).fill("张建华")
    names.nth(1).fill("王立新")
    page.locator("input[name=party_phone]").nth(0).fill("13912345678")
    page.select_option("#complexity", "complex")
    page.click("#intake-form button[type=submit]")
    page.wait_for_url("**/disputes/TJ*?created=1")
    assert "纠纷已受理" in page.inner_text(".alert")
    assert page.inner_text("#case-state") == "调解中"
    assert facts["event"] in page.inner_text("main")
    number = page.url.split("/disputes/")[1].split("?")[0]

    page.click("details[data-step=record_round] > summary")
    form = page.locator("details[data-step=record_round] form")
    form.locator("input[name=place]").fill("镇矛调中心调解室")
    form.locator("input[name=attendees]").fill("张建华、王立新、调解员")
    form.locator("textarea[name=minutes]").fill("双方陈述，调解员释法明理，双方同意恢复排水沟原走向。")
    form.locator("select[name=outcome]").select_option("agreement")
    form.locator("button[type=submit]").click()
    page.wait_for_selector("#rounds >> text=第 1 次调解")

    page.click("details[data-step=agree] > summary")
    form = page.locator("details[data-step=agree] form")
    form.locator("textarea[name=terms]").fill("1. 王立新于十日内恢复排水沟原走向。\n2. 费用由王立新承担。")
    form.locator("button[type=submit]").click()
    page.wait_for_selector("#case-state >> text=已达成协议")
    assert "7日回访" in page.inner_text("#follow-ups")
    page.screenshot(path=str(shots / "dispute-case.png"), full_page=True)

    href = page.get_attribute("#agreement-pdf", "href")
    pdf = page.request.get(server.url + href)
    assert pdf.ok and pdf.headers["content-type"] == "application/pdf"
    text = "".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf.body())).pages)
    for expected in (
        "人民调解协议书",
        number,
        "申请人：张建华",
        "被申请人：王立新",
        "13912345678",
        "恢复排水沟原走向",
        facts["org"],
    ):
        assert expected in text, expected

    _switch_user(page, server, "leader")
    page.wait_for_timeout(4500)  # the cockpit computes a panel once per 4-second interval
    after = _panel(page, server, facts["county"])
    assert after is not None and (before is None or after > before), (before, after)
