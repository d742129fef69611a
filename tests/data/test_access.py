"""Application and approval compile into one policy; revocation and expiry end it at once."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from civicgrid.core import audit
from civicgrid.core.errors import Conflict, Invalid, NotFound, PermissionDenied
from civicgrid.data import access, metering
from civicgrid.data.models import Application, ApplicationState, DatasetState, Grant
from tests.data.access_world import AccessWorld, access_world_fixture  # noqa: F401


def _apply(session, w: AccessWorld, dataset="population", **kw):
    args = {
        "dataset": dataset,
        "purpose": "低保资格核查",
        "fields": ["village", "name", "id_number", "age"],
        "until": access.today() + timedelta(days=30),
    }
    args.update(kw)
    return access.apply(session, w.actor(session, "consumer"), **args)


def test_apply_approve_narrowing_compiles_one_policy(access_world: AccessWorld):
    w = access_world
    with w.db.session() as s:
        app = _apply(s, w, row_filter=[{"field": "age", "op": "gte", "value": "18"}])
        assert app.state == ApplicationState.pending  # conditional sharing waits for the owner
        with pytest.raises(PermissionDenied) as e:
            access.policy_for(s, w.org_id(s, "consumer"), "population")
        assert e.value.code == "no_grant"
        grant = access.approve(
            s,
            w.actor(s, "steward"),
            app.id,
            fields=["village", "name", "age"],
            extra_filter=[{"field": "village", "op": "eq", "value": "村1"}],
            clear_fields=["name"],
            quota_rows_per_day=500,
            rate_per_minute=30,
        )
        policy = access.policy_for(s, w.org_id(s, "consumer"), "population")
    assert policy.grant_id == grant.id and policy.fields == ("village", "name", "age")
    assert policy.masks == {}  # id_number was dropped; name is granted in clear
    assert [c.as_dict() for c in policy.row_filter] == [
        {"field": "age", "op": "gte", "value": 18},  # typed from the schema
        {"field": "village", "op": "eq", "value": "村1"},
    ]
    assert (policy.quota_rows_per_day, policy.rate_per_minute, policy.mode) == (500, 30, "api")
    # the period ends at local midnight after its last day
    assert policy.expires_at is not None
    local_end = policy.expires_at.astimezone(access.default_calendar().tz)
    assert local_end.time().isoformat() == "00:00:00"
    assert local_end.date() == access.today() + timedelta(days=31)


def test_personal_fields_are_masked_unless_named_in_clear(access_world: AccessWorld):
    w = access_world
    with w.db.session() as s:
        app = _apply(s, w)
        access.approve(s, w.actor(s, "steward"), app.id)
        policy = access.policy_for(s, w.org_id(s, "consumer"), "population")
    assert policy.masks == {"name": "name", "id_number": "id_number"}
    assert policy.clear_fields == frozenset()


def test_unconditional_dataset_is_approved_at_once_unless_personal_fields_are_asked(
    access_world: AccessWorld,
):
    w = access_world
    with w.db.session() as s:
        app = _apply(s, w, dataset="shops", fields=["shop", "licence"])
        assert app.state == ApplicationState.approved and app.decided_by == "system"
        assert access.policy_for(s, w.org_id(s, "consumer"), "shops").fields == ("shop", "licence")
        # personal data needs a person's decision, even from an unconditionally shared dataset
        app = _apply(s, w, dataset="shops", fields=["shop", "phone"])
        assert app.state == ApplicationState.pending
        access.approve(s, w.actor(s, "steward"), app.id, clear_fields=["phone"])
        policy = access.policy_for(s, w.org_id(s, "consumer"), "shops")
    assert policy.fields == ("shop", "phone") and policy.masks == {}


def test_owner_reads_its_own_data_in_clear_without_a_grant(access_world: AccessWorld):
    w = access_world
    with w.db.session() as s:
        policy = access.policy_for(s, w.org_id(s, "steward"), "population")
    assert policy.owner and policy.masks == {} and "id_number" in policy.fields


@pytest.mark.parametrize(
    ("kw", "error", "code"),
    [
        ({"dataset": "secret"}, NotFound, "unknown_dataset"),  # 不予共享: not in the consumer's catalogue
        ({"dataset": "nope"}, NotFound, "unknown_dataset"),
        ({"fields": ["village", "salary"]}, Invalid, "unknown_field"),
        ({"fields": []}, Invalid, "no_fields"),
        ({"row_filter": [{"field": "salary", "op": "eq", "value": 1}]}, Invalid, "unknown_field"),
        ({"row_filter": [{"field": "age", "op": "drop", "value": 1}]}, Invalid, "bad_filter"),
        ({"row_filter": [{"field": "age", "op": "gt", "value": "old"}]}, Invalid, "bad_filter_value"),
        ({"row_filter": "not json"}, Invalid, "bad_filter"),
        ({"until": access.today() - timedelta(days=1)}, Invalid, "bad_period"),
        ({"purpose": " "}, Invalid, "no_purpose"),
        ({"mode": "ftp"}, Invalid, "bad_mode"),
    ],
)
def test_bad_applications_are_refused_and_store_nothing(access_world: AccessWorld, kw, error, code):
    w = access_world
    with w.db.session() as s:
        with pytest.raises(error) as e:
            _apply(s, w, **kw)
        assert e.value.code == code
        s.rollback()
        assert s.scalar(select(func.count()).select_from(Application)) == 0


def test_not_shared_names_the_basis_in_chinese(access_world: AccessWorld):
    """The bureau sees 不予共享 entries in its catalogue, yet cannot apply for them either."""
    w = access_world
    with w.db.session() as s, pytest.raises(PermissionDenied) as e:
        admin = w.actor(s, "admin")
        access.apply(s, admin, dataset="secret", purpose="专项检查", fields=["x"], until=access.today())
    assert "不予共享" in e.value.translated() and "涉及国家秘密" in e.value.translated()


def test_a_second_pending_application_is_a_conflict(access_world: AccessWorld):
    w = access_world
    with w.db.session() as s:
        _apply(s, w)
        with pytest.raises(Conflict):
            _apply(s, w)


@pytest.mark.parametrize(
    ("kw", "fragment"),
    [
        ({"fields": ["village", "phone"]}, "phone"),  # phone was not asked for
        ({"until": access.today() + timedelta(days=60)}, "requested"),
        ({"clear_fields": ["age"]}, "not personal"),
        ({"fields": ["village"], "clear_fields": ["name"]}, "not among"),
        ({"quota_rows_per_day": 0}, "quota"),
        ({"mode": "ftp"}, "api or the sandbox"),
    ],
)
def test_an_approval_may_narrow_but_never_widen(access_world: AccessWorld, kw, fragment):
    w = access_world
    with w.db.session() as s:
        app = _apply(s, w)
        with pytest.raises(Invalid) as e:
            access.approve(s, w.actor(s, "steward"), app.id, **kw)
        assert fragment in e.value.message.format(**e.value.params)
        s.rollback()
        assert s.scalar(select(func.count()).select_from(Grant)) == 0


def test_sandbox_application_cannot_be_widened_to_api(access_world: AccessWorld):
    w = access_world
    with w.db.session() as s:
        app = _apply(s, w, mode="sandbox")
        with pytest.raises(Invalid):
            access.approve(s, w.actor(s, "steward"), app.id, mode="api")
        grant = access.approve(s, w.actor(s, "steward"), app.id)
        policy = access.policy_for(s, w.org_id(s, "consumer"), "population")
    assert grant.mode == "sandbox" and not policy.allows_rows


def test_only_the_owner_org_decides(access_world: AccessWorld):
    w = access_world
    with w.db.session() as s:
        app = _apply(s, w)
        with pytest.raises(PermissionDenied):  # the applicant sees why
            access.approve(s, w.actor(s, "consumer"), app.id)
        with pytest.raises(NotFound):  # a stranger does not even learn it exists
            access.refuse(s, w.actor(s, "outsider"), app.id, reason="no")
        assert app.state == ApplicationState.pending


def test_refusal_needs_a_reason_and_leaves_no_grant(access_world: AccessWorld):
    w = access_world
    with w.db.session() as s:
        app = _apply(s, w)
        with pytest.raises(Invalid):
            access.refuse(s, w.actor(s, "steward"), app.id, reason="  ")
        access.refuse(s, w.actor(s, "steward"), app.id, reason="用途与数据无关")
        with pytest.raises(Conflict):  # decided once
            access.approve(s, w.actor(s, "steward"), app.id)
        assert access.application_dict(s, app)["decision_reason"] == "用途与数据无关"
        with pytest.raises(PermissionDenied):
            access.policy_for(s, w.org_id(s, "consumer"), "population")


def test_revocation_is_immediate_and_says_so(access_world: AccessWorld):
    w = access_world
    with w.db.session() as s:
        grant = access.approve(s, w.actor(s, "steward"), _apply(s, w).id)
        gid = grant.id
    with w.db.session() as s:
        with pytest.raises(PermissionDenied):  # the consumer cannot revoke the owner's grant
            access.revoke(s, w.actor(s, "consumer"), gid, reason="x")
        with pytest.raises(Invalid):
            access.revoke(s, w.actor(s, "steward"), gid, reason="")
        access.revoke(s, w.actor(s, "steward"), gid, reason="项目结束")
    with w.db.session() as s, pytest.raises(PermissionDenied) as e:
        access.policy_for(s, w.org_id(s, "consumer"), "population")
    assert e.value.code == "grant_revoked" and "撤销" in e.value.translated()


def test_the_bureau_may_revoke_any_grant(access_world: AccessWorld):
    w = access_world
    with w.db.session() as s:
        grant = access.approve(s, w.actor(s, "steward"), _apply(s, w).id)
        access.revoke(s, w.actor(s, "admin"), grant.id, reason="安全检查")
        assert grant.revoked_at is not None


def test_a_grant_ends_at_the_end_of_its_period(access_world: AccessWorld, monkeypatch):
    w = access_world
    with w.db.session() as s:
        access.approve(s, w.actor(s, "steward"), _apply(s, w, until=access.today()).id)
        org = w.org_id(s, "consumer")
        assert access.policy_for(s, org, "population").grant_id
        last_day = access.today()
        end = access.end_of_day(last_day)
        monkeypatch.setattr(access, "utcnow", lambda: end - timedelta(seconds=1))
        assert access.policy_for(s, org, "population").grant_id  # still the last second of the day
        monkeypatch.setattr(access, "utcnow", lambda: end)
        with pytest.raises(PermissionDenied) as e:
            access.policy_for(s, org, "population")
    assert e.value.code == "grant_expired" and last_day.isoformat() in e.value.translated()


def test_a_new_approval_supersedes_the_old_grant(access_world: AccessWorld):
    w = access_world
    with w.db.session() as s:
        first = access.approve(s, w.actor(s, "steward"), _apply(s, w).id)
        second = access.approve(
            s, w.actor(s, "steward"), _apply(s, w).id, clear_fields=["name"], fields=["village", "name"]
        )
        assert first.revoked_at is not None and second.revoked_at is None
        policy = access.policy_for(s, w.org_id(s, "consumer"), "population")
        live = s.scalar(select(func.count()).select_from(Grant).where(Grant.revoked_at.is_(None)))
    assert policy.grant_id == second.id and live == 1


def test_inbox_and_my_applications_are_scoped(access_world: AccessWorld):
    w = access_world
    with w.db.session() as s:
        app = _apply(s, w)
        steward, consumer, outsider = (w.actor(s, u) for u in ("steward", "consumer", "outsider"))
        assert [a.id for a in s.scalars(access.inbox_stmt(steward))] == [app.id]
        assert list(s.scalars(access.inbox_stmt(outsider))) == []
        assert [a.id for a in s.scalars(access.my_applications_stmt(consumer))] == [app.id]
        assert list(s.scalars(access.my_applications_stmt(outsider))) == []


def test_reads_are_audited_with_personal_values_masked(access_world: AccessWorld):
    w = access_world
    with w.db.session() as s:
        ds = access.get_dataset(s, "population")
        access.record_read(
            s,
            w.actor(s, "consumer"),
            dataset=ds,
            channel="sandbox",
            rows=3,
            query={"filters": [{"field": "id_number", "op": "eq", "value": "110101199003071234"}]},
        )
    with w.db.session() as s:
        rec = s.scalars(select(audit.AuditRecord).where(audit.AuditRecord.action == "data.read")).one()
        assert audit.verify(s) == []
    body = json.loads(rec.diff)["_"]
    assert rec.target_id == "population" and body["channel"] == "sandbox" and body["rows"] == 3
    assert body["query"]["filters"][0]["value"] == "110101********1234"
    assert "110101199003071234" not in rec.diff
    meter = metering.meter_for(w.db.engine)
    assert sum(c[1] for c in meter.pending().values()) == 3


def test_a_destroyed_dataset_is_refused_even_to_its_grants(access_world: AccessWorld):
    w = access_world
    with w.db.session() as s:
        access.approve(s, w.actor(s, "steward"), _apply(s, w).id)
        ds = access.get_dataset(s, "population")
        ds.state = DatasetState.destroyed
        s.flush()
        with pytest.raises(access.DatasetDestroyed) as err:  # 410, saying so, not "unknown"
            access.policy_for(s, w.org_id(s, "consumer"), "population")
        assert err.value.status == 410 and "population" in err.value.translated()
