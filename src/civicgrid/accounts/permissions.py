"""Roles and what each may do: the one table every route's permission check reads.

Scope is separate: whatever a role may do, it may do only inside the region subtree of the
org the user acts for (see `core.deps.Actor.in_scope`).
"""

from __future__ import annotations

import enum


class Role(enum.StrEnum):
    admin = "admin"
    leader = "leader"
    dispatcher = "dispatcher"
    handler = "handler"
    grid_worker = "grid_worker"
    resident = "resident"
    data_steward = "data_steward"
    data_consumer = "data_consumer"
    mediator = "mediator"  # 人民调解员: village committee, township or county 矛调中心


class Permission(enum.StrEnum):
    regions_read = "regions.read"
    regions_manage = "regions.manage"
    grids_assign = "grids.assign"
    orgs_read = "orgs.read"
    orgs_manage = "orgs.manage"
    users_read = "users.read"
    users_manage = "users.manage"
    audit_read = "audit.read"
    tokens_own = "tokens.own"
    events_report = "events.report"
    events_read = "events.read"  # every event in the scope, not only one's own reports
    events_dispatch = "events.dispatch"
    events_handle = "events.handle"
    events_verify = "events.verify"
    events_supervise = "events.supervise"
    events_import = "events.import"
    catalogue_manage = "catalogue.manage"
    data_read = "data.read"  # the data catalogue (数据目录)
    data_manage = "data.manage"  # register and ingest the own org's datasets
    data_apply = "data.apply"  # apply for datasets, hold API keys, use the sandbox
    data_approve = "data.approve"  # decide applications for the own org's datasets
    data_admin = "data.admin"  # the bureau: every dataset in the scope
    risks_read = "risks.read"  # warnings and rules in the scope (大平安)
    risks_raise = "risks.raise"  # raise a warning by hand
    risks_handle = "risks.handle"  # measures, tasks, feedback and closing for the own org's warnings
    risks_manage = "risks.manage"  # configure risk rules
    disputes_read = "disputes.read"  # mediation cases in the scope (parties masked)
    disputes_mediate = "disputes.mediate"  # intake, triage, mediation, agreements, follow-ups
    disputes_personal = "disputes.personal"  # parties' ID numbers and phones, on cases of one's org


P = Permission
_STAFF = {P.regions_read, P.orgs_read, P.tokens_own}

_EVENT_STAFF = {P.events_report, P.events_read}
_RISK_STAFF = {P.risks_read, P.risks_raise}
_DISPUTE_STAFF = {P.disputes_read, P.disputes_mediate, P.disputes_personal}

ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.admin: frozenset(Permission),
    Role.leader: frozenset(
        _STAFF | _EVENT_STAFF | _RISK_STAFF | {P.users_read, P.events_supervise, P.disputes_read}
    ),
    Role.dispatcher: frozenset(
        _STAFF
        | _EVENT_STAFF
        | _DISPUTE_STAFF
        | {P.users_read, P.grids_assign, P.events_dispatch, P.events_supervise, P.events_import}
        | _RISK_STAFF
        | {P.risks_handle}
    ),
    Role.handler: frozenset(_STAFF | _EVENT_STAFF | {P.events_handle, P.risks_read, P.risks_handle}),
    Role.grid_worker: frozenset(_STAFF | _EVENT_STAFF | _RISK_STAFF | {P.events_verify}),
    Role.resident: frozenset({P.regions_read, P.tokens_own, P.events_report, P.events_verify}),
    Role.data_steward: frozenset(_STAFF | {P.data_read, P.data_manage, P.data_approve}),
    Role.data_consumer: frozenset(_STAFF | {P.data_read, P.data_apply}),
    Role.mediator: frozenset(_STAFF | _DISPUTE_STAFF | {P.events_read}),
}

ROLE_LABELS = {
    Role.admin: "Administrator",
    Role.leader: "Leader",
    Role.dispatcher: "Dispatcher",
    Role.handler: "Department handler",
    Role.grid_worker: "Grid worker",
    Role.resident: "Resident",
    Role.data_steward: "Data steward",
    Role.data_consumer: "Data consumer",
    Role.mediator: "Mediator",
}


def permissions_for(role: Role) -> frozenset[Permission]:
    return ROLE_PERMISSIONS[role]
