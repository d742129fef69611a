"""The edges to other capabilities: a threat of violence raises a risk warning (part B's
`raise_warning`), and the seal hook the seal capability will call to sign the agreement."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from civicgrid.core.db import utcnow
from civicgrid.core.errors import Conflict
from civicgrid.disputes import service
from tests.disputes.conftest import register, step

pytestmark = pytest.mark.usefixtures("in_english")
risks = pytest.importorskip("civicgrid.risks.models")


def _warning(s, number):
    return s.scalar(select(risks.Warning).where(risks.Warning.number == number))


def _evidence(s, warning):
    return {
        (e.kind, e.ref_id)
        for e in s.scalars(
            select(risks.WarningEvidence).where(risks.WarningEvidence.warning_id == warning.id)
        )
    }


def test_a_threat_of_violence_raises_a_warning_with_the_case_as_evidence(world):
    with world.db.session() as s:
        d = register(s, world, threat_of_violence=True, risk_note="一方扬言报复")
        assert d.warning_ref
        w = _warning(s, d.warning_ref)
        assert w is not None and str(w.level) == "orange" and w.source == "disputes"
        assert _evidence(s, w) == {("dispute", d.id)}
        assert [t.action for t in service.timeline(s, d)] == ["register", "warn"]
        # a second threatening case in the same grid adds evidence to the open warning
        d2 = register(s, world, threat_of_violence=True, title="另一起纠纷")
        assert d2.warning_ref == d.warning_ref
        assert _evidence(s, w) == {("dispute", d.id), ("dispute", d2.id)}


def test_high_risk_raises_yellow_and_low_risk_raises_nothing(world):
    with world.db.session() as s:
        high = register(s, world, risk="high")
        assert str(_warning(s, high.warning_ref).level) == "yellow"
        low = register(s, world, grid_code=world.tree.regions["grid1b"].code)
        assert low.warning_ref == "" and [t.action for t in service.timeline(s, low)] == ["register"]


def _agreed(s, world):
    number = register(s, world, complexity="complex", take=True).number
    step(
        s,
        world,
        "t_mediator",
        number,
        "record_round",
        held_at=utcnow() - timedelta(hours=1),
        place="调解室",
        attendees="双方",
        minutes="调解",
        outcome="agreement",
    )
    return step(s, world, "t_mediator", number, "agree", kind="full", facts="事实", terms="条款")


def test_the_seal_hook_signs_only_the_current_agreement(world):
    with world.db.session() as s:
        d = _agreed(s, world)
        actor = world.actor(s, "t_mediator")
        pdf, sha = service.agreement_for_sealing(s, actor, d.number)
        assert service.agreement_for_sealing(s, actor, d.number) == (pdf, sha)  # reproducible bytes
        with pytest.raises(Conflict):
            service.record_seal(s, actor, d.number, seal_ref="SEAL-1", document_sha256="0" * 64)
        d = service.record_seal(s, actor, d.number, seal_ref="SEAL-1", document_sha256=sha)
        assert d.sealed_at is not None and d.sealed_sha256 == sha
        assert service.timeline(s, d)[-1].action == "seal"
    with world.db.session() as s:
        # breached and re-agreed: the old seal no longer fits the new agreement
        step(
            s,
            world,
            "t_mediator",
            d.number,
            "follow_up",
            kind="day7",
            satisfaction="dissatisfied",
            performance="breached",
        )
        step(
            s,
            world,
            "t_mediator",
            d.number,
            "record_round",
            held_at=utcnow() - timedelta(minutes=5),
            place="调解室",
            attendees="双方",
            minutes="再次调解",
            outcome="agreement",
        )
        d = step(s, world, "t_mediator", d.number, "agree", kind="full", facts="事实", terms="新条款")
        assert d.sealed_at is None
        with pytest.raises(Conflict):
            service.record_seal(
                s, world.actor(s, "t_mediator"), d.number, seal_ref="SEAL-1", document_sha256=sha
            )
