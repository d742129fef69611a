"""Who sees what: ID numbers and phones masked for anyone without the right and a relation to the
case; a reader sees only the cases of their region subtree (and those their org took), through
the service, the API, the statistics and the pages."""

from __future__ import annotations

import pytest

from civicgrid.core.errors import NotFound, PermissionDenied
from civicgrid.disputes import service, stats
from civicgrid.events import stats as event_stats
from tests.disputes.conftest import APPLICANT, RESPONDENT, held_now, register, step
from tests.factories import login_headers

ID_CLEAR, PHONE_CLEAR = APPLICANT["id_number"], APPLICANT["phone"]
ID_MASKED, PHONE_MASKED = "110101********1233", "138****5678"


def _parties(s, world, who, number):
    d = service.get_dispute(s, world.actor(s, who), number)
    return service.describe(s, world.actor(s, who), d)["parties"]


@pytest.mark.parametrize(
    ("who", "clear"),
    [
        ("t_mediator", True),  # the handling (and first-contact) org's mediator
        ("t_dispatcher", True),  # the handling office
        ("admin", True),
        ("leader", False),  # reads the county's cases, no right to personal data
        ("c_mediator", False),  # the right, but the case is the township's
        ("v_mediator", False),  # the village inside the township does not handle it
    ],
)
def test_id_numbers_and_phones_are_masked_without_the_right(world, who, clear):
    with world.db.session() as s:
        number = register(s, world).number
    with world.db.session() as s:
        applicant = _parties(s, world, who, number)[0]
        assert applicant["name"] == "张三"  # names are not masked: parties must be called by name
        if clear:
            assert (applicant["id_number"], applicant["phone"]) == (ID_CLEAR, PHONE_CLEAR)
        else:
            assert (applicant["id_number"], applicant["phone"]) == (ID_MASKED, PHONE_MASKED)
            assert _parties(s, world, who, number)[1]["address"] != RESPONDENT["address"]


def test_an_assigned_mediator_from_another_org_sees_parties_after_the_case_moves_to_them(world):
    with world.db.session() as s:
        number = register(s, world, complexity="complex").number
        step(s, world, "t_mediator", number, "move_up", reason="疑难", leader_id=world.user_id(s, "leader"))
        step(s, world, "c_mediator", number, "assign", mediator_ids=[world.user_id(s, "c_mediator")])
    with world.db.session() as s:
        assert _parties(s, world, "c_mediator", number)[0]["id_number"] == ID_CLEAR
        assert _parties(s, world, "leader", number)[0]["id_number"] == ID_MASKED


def test_the_agreement_pdf_is_only_for_readers_who_may_see_the_parties(world):
    with world.db.session() as s:
        number = register(s, world, complexity="complex", take=True).number
        step(
            s,
            world,
            "t_mediator",
            number,
            "record_round",
            held_at=held_now(),
            place="调解室",
            attendees="双方",
            minutes="调解",
            outcome="agreement",
        )
        d = step(s, world, "t_mediator", number, "agree", kind="full", facts="事实", terms="条款")
        with pytest.raises(PermissionDenied):
            service.agreement_pdf(s, world.actor(s, "leader"), d)
        assert service.agreement_pdf(s, world.actor(s, "t_mediator"), d).startswith(b"%PDF")


def test_a_reader_sees_only_cases_of_their_subtree(world):
    with world.db.session() as s:
        mine = register(s, world).number
        theirs = register(
            s, world, "t2_mediator", grid_code=world.tree.regions["grid2a"].code, title="县2的纠纷"
        ).number
    with world.db.session() as s:
        for who, visible in (
            ("t_mediator", {mine}),
            ("leader", {mine}),
            ("t2_mediator", {theirs}),
            ("leader2", {theirs}),
            ("admin", {mine, theirs}),
        ):
            actor = world.actor(s, who)
            assert {d.number for d in s.scalars(service.list_stmt(actor))} == visible, who
        with pytest.raises(NotFound):
            service.get_dispute(s, world.actor(s, "t_mediator"), theirs)
        with pytest.raises(NotFound):
            step(s, world, "t_mediator", theirs, "withdraw", reason="x")
        # residents and grid workers have no access at all
        assert list(s.scalars(service.list_stmt(world.actor(s, "resident")))) == []
        # statistics count only the reader's subtree
        win = event_stats.window()
        assert stats.summary(s, world.actor(s, "leader2"), win)["metrics"]["registered"] == 1
        assert stats.summary(s, world.actor(s, "admin"), win)["metrics"]["registered"] == 2
        with pytest.raises(NotFound):
            stats.summary(s, world.actor(s, "leader2"), win, region=world.tree.regions["county1"].code)


def test_the_api_and_pages_keep_to_the_scope(world, client):
    with world.db.session() as s:
        theirs = register(s, world, "t2_mediator", grid_code=world.tree.regions["grid2a"].code).number
    h = login_headers(client, "t_mediator")
    assert client.get(f"/api/v1/disputes/{theirs}", headers=h).status_code == 404
    assert client.get(f"/api/v1/disputes/{theirs}/agreement.pdf", headers=h).status_code == 404
    assert (
        client.post(f"/api/v1/disputes/{theirs}/withdraw", headers=h, json={"reason": "x"}).status_code == 404
    )
    assert client.get("/api/v1/disputes", headers=h).json()["total"] == 0
    r = client.get("/api/v1/disputes", headers=login_headers(client, "resident"))
    assert r.status_code == 403
    r = client.get("/api/v1/stats/disputes/summary", headers=login_headers(client, "grid_worker"))
    assert r.status_code == 403
