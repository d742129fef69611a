"""A handful of demo mediation cases in the demo jurisdiction's first township of 椒江区 (where
the demo `mediator` works): one of each kind a visitor should see — settled and closed at a
village, agreed with a follow-up call overdue, mediating at the township, failed and referred,
a difficult (疑难) county case with its leader in charge, and one waiting for triage.

Synthetic people, as everything below county level in the demo. Cases go through the service
(real timelines, audit records, follow-up calls); registration and agreement dates are then
moved into the past so the follow-up panels have something to show. The village committee's
and the county centre's mediators are demo accounts with random passwords nobody is shown.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from civicgrid.accounts import service as accounts
from civicgrid.accounts.models import Org
from civicgrid.accounts.permissions import Role
from civicgrid.core.auth import SYSTEM, Actor
from civicgrid.core.db import utcnow
from civicgrid.disputes import service
from civicgrid.disputes.models import Dispute, FollowUp, Level
from civicgrid.events import service as events
from civicgrid.regions import service as regions

COUNTY = "331002"  # 椒江区


def _mediator_of(session: Session, org: Org, username: str, name: str) -> Actor:
    user = accounts.get_user_by_username(session, username) or accounts.create_user(
        session,
        SYSTEM,
        username=username,
        display_name=name,
        password=secrets.token_urlsafe(16),
        memberships=[(org.code, Role.mediator)],
    )
    return accounts.actor_for_user(session, user)


def _registered(session: Session, d: Dispute, at: datetime) -> None:
    d.registered_at = at
    d.registered_day = events.local_date(at)
    session.flush()


def _agreed(session: Session, d: Dispute, at: datetime) -> None:
    """Move the agreement (and so its follow-up calls) to `at`."""
    d.agreed_at = d.concluded_at = at
    d.duration_days = service.working_days(session, d, d.registered_at, at)
    cal = events.calendar_for(session, d.handling_org_id)
    for f in session.scalars(select(FollowUp).where(FollowUp.dispute_id == d.id)):
        f.due_on = service.follow_up_day(cal, at, service.FOLLOW_UP_DAYS[f.kind])
    session.flush()


def _round(session: Session, who: Actor, d: Dispute, at: datetime, minutes: str, outcome: str) -> None:
    service.do_record_round(
        session,
        who,
        d,
        held_at=at,
        place="调解室",
        attendees="、".join(p.name for p in d.parties) + "、调解员",
        minutes=minutes,
        outcome=outcome,
    )


def load_demo_disputes(session: Session, *, now: datetime | None = None) -> list[str]:
    """Create the demo cases in the caller's transaction; returns their numbers. Does nothing
    when the demo jurisdiction or its `mediator` login is not there."""
    now = now or utcnow()
    user = accounts.get_user_by_username(session, "mediator")
    county_org = session.scalar(select(Org).where(Org.code == f"{COUNTY}-centre"))
    if user is None or county_org is None:
        return []
    township = accounts.actor_for_user(session, user)
    town = regions.get(session, township.region_id)
    villages = regions.children(session, SYSTEM, town.code)[:2]
    committee = (
        accounts.find_org(session, villages[0].id, service.ORG_KIND[Level.village]) if villages else None
    )
    if committee is None:
        return []
    grids = [regions.children(session, SYSTEM, v.code)[0] for v in villages]
    own = regions.children(session, SYSTEM, villages[0].code)  # the village committee's grids
    village = _mediator_of(session, committee, f"mediator.{committee.code}", "吴调解")
    county = _mediator_of(session, county_org, f"mediator.{county_org.code}", "郑调解")
    leader = accounts.get_user_by_username(session, "leader")
    day = timedelta(days=1)
    out: list[Dispute] = []

    def case(who: Actor, grid: Any, days_ago: int, **kw: Any) -> Dispute:
        complexity, take = kw.pop("complexity", None), kw.pop("take", False)
        leader_id = kw.pop("leader_id", None)
        d = service.register(session, who, grid_code=grid.code, **kw)
        _registered(session, d, now - days_ago * day)
        if complexity:
            service.do_triage(session, who, d, complexity=complexity, leader_id=leader_id)
        if take:
            service.do_assign(session, who, d, mediator_ids=[who.user_id])
        out.append(d)
        return d

    # 1. Settled at the village committee; both follow-up calls made: closed.
    d = case(
        village,
        grids[0],
        45,
        source="walk_in",
        type="neighbour",
        title="邻里排水沟改道纠纷",
        description="两户因排水沟改道导致一方院内积水，多次争吵。",
        parties=[{"name": "陈建国", "role": "applicant"}, {"name": "林美华", "role": "respondent"}],
        complexity="simple",
        take=True,
    )
    _round(session, village, d, now - 41 * day, "双方到场，查看现场，同意恢复原排水走向。", "agreement")
    service.do_agree(
        session,
        village,
        d,
        kind="full",
        facts=d.description,
        terms="1. 林美华于一周内恢复排水沟原走向。\n2. 费用由林美华承担。",
    )
    for p in d.parties:
        service.do_confirm(session, village, d, party_seq=p.seq)
    service.do_follow_up(session, village, d, kind="day7", satisfaction="satisfied", performance="performing")
    service.do_follow_up(session, village, d, kind="day30", satisfaction="satisfied", performance="performed")
    _agreed(session, d, now - 40 * day)

    # 2. Agreed at the village committee ten days ago: the 7-day call is overdue.
    d = case(
        village,
        own[-1],
        14,
        source="hotline",
        type="family",
        title="赡养费分担纠纷",
        description="三兄妹对母亲赡养费分担意见不一，来电求助。",
        amount="12000",
        parties=[
            {"name": "周秀英", "role": "applicant"},
            {"name": "周志强", "role": "respondent"},
            {"name": "周志明", "role": "respondent"},
        ],
        complexity="simple",
        take=True,
    )
    _round(session, village, d, now - 11 * day, "三方协商按月分担赡养费。", "agreement")
    service.do_agree(
        session, village, d, kind="full", facts=d.description, terms="兄弟二人每月各支付赡养费600元。"
    )
    _agreed(session, d, now - 10 * day)

    # 3. Mediating at the township centre (the demo mediator's own case).
    d = case(
        township,
        grids[0],
        6,
        source="walk_in",
        type="property",
        title="小区物业费与停车位纠纷",
        description="业主代表与物业公司就停车位收费标准发生争议。",
        amount="86000",
        parties=[
            {"name": "业主代表 黄立新", "role": "applicant"},
            {"name": "椒江某物业服务有限公司", "role": "respondent", "kind": "org"},
        ],
        complexity="complex",
        take=True,
    )
    _round(session, township, d, now - day, "双方陈述意见，物业公司同意提供收费依据。", "progress")

    # 4. Referred by the court, failed at the township, referred to arbitration: waiting.
    d = case(
        township,
        grids[-1],
        9,
        source="referral",
        referred_by="court",
        referred_by_name="椒江区人民法院",
        type="labour",
        title="工资拖欠纠纷（诉前调解）",
        description="12名工人与某建筑分包商就拖欠工资发生争议，法院委派诉前调解。",
        amount="240000",
        parties=[
            {"name": "工人代表 何大勇", "role": "applicant"},
            {"name": "某建筑劳务有限公司", "role": "respondent", "kind": "org"},
        ],
        complexity="complex",
        take=True,
    )
    _round(session, township, d, now - 3 * day, "分包商否认欠薪数额，双方分歧较大。", "no_agreement")
    service.do_fail(session, township, d, reason="双方对欠薪数额分歧较大，无法达成一致。")
    service.do_refer(
        session, township, d, target="arbitration", receiving_body="椒江区劳动人事争议仲裁委员会"
    )

    # 5. Difficult: land requisition at the county centre, leader in charge, threat of violence.
    if leader is not None:
        d = case(
            county,
            grids[0],
            4,
            source="walk_in",
            type="requisition",
            title="征地补偿标准纠纷",
            description="数户村民对征地补偿标准有异议，情绪激动，扬言阻工。",
            amount="1500000",
            parties=[
                {"name": "村民代表 蒋国华", "role": "applicant"},
                {"name": "某镇人民政府", "role": "respondent", "kind": "org"},
            ],
            risk="high",
            threat_of_violence=True,
            complexity="difficult",
            leader_id=leader.id,
            take=True,
        )
        _round(session, county, d, now - day, "包案领导到场听取诉求，安排测绘复核。", "adjourned")

    # 6. Just registered at the township window: waiting for triage.
    d = case(
        township,
        grids[0],
        0,
        source="walk_in",
        type="debt",
        title="借款归还纠纷",
        description="借款人逾期未还借款，出借人来访要求调解。",
        amount="30000",
        parties=[{"name": "方明", "role": "applicant"}, {"name": "许亮", "role": "respondent"}],
    )
    return [d.number for d in out]
