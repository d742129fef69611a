"""The data lifecycle (数据生命周期): retention per dataset, destruction requests decided by a
second person, and destruction certificates (销毁证明).

- Retention: a dataset's `retention_days` counts from each load (a data version's finish).
  When the *current* version is past it, the whole dataset is due; otherwise the superseded
  versions past it are. `expired` lists what is due; the worker's `check_retention` opens a
  destruction request for it (never destroys anything itself).
- A request names the dataset or some of its earlier versions, and a reason. An approver —
  a holder of data.approve in the owner org, or the bureau (data.admin) — who is not the
  requester approves or refuses it (with a reason).
- Approval first commits the decision (the dataset or versions are marked destroyed, so no
  channel reads them from that moment, and the manifest of the files with their SHA-256 is
  recorded), then removes the files through the engine and writes the certificate: what,
  when, who asked, who approved, and the hash and size of every removed file. If the process
  dies in between, the worker finishes the removal from the recorded manifest.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from civicgrid.accounts.models import Org
from civicgrid.accounts.permissions import Permission
from civicgrid.core import audit
from civicgrid.core.auth import SYSTEM, Actor
from civicgrid.core.db import utcnow
from civicgrid.core.errors import Conflict, Invalid, NotFound, PermissionDenied
from civicgrid.data import service
from civicgrid.data.engine import file_sha256
from civicgrid.data.models import (
    Application,
    ApplicationState,
    Dataset,
    DatasetState,
    DataVersion,
    Destruction,
    DestructionState,
    Grant,
    VersionState,
)

P = Permission
#: Versions that still hold files (failed loads leave none; destroyed ones are gone).
HOLDING = (VersionState.ready, VersionState.superseded)
#: After a refusal, the retention job asks again about the same data only after this long.
REFUSAL_HOLD_DAYS = 90
#: An approved destruction not done after this long was interrupted: the worker finishes it.
FINISH_AFTER = timedelta(minutes=10)
#: A version still "loading" after this long belongs to a load that died; it blocks nothing.
LOAD_RUNS_AT_MOST = timedelta(hours=24)
SCOPES = ("dataset", "versions")


def N_(message: str) -> str:
    """Marks a msgid for extraction; it is translated where it is shown."""
    return message


# ---- retention ----------------------------------------------------------------------------


def expires_at(ds: Dataset, dv: DataVersion) -> datetime | None:
    """When a version passes the dataset's retention (None: kept without limit)."""
    if not ds.retention_days:
        return None
    return (dv.finished_at or dv.created_at) + timedelta(days=ds.retention_days)


@dataclass
class Due:
    """What of one dataset is past its retention: the whole dataset, or some versions."""

    dataset: Dataset
    scope: str  # dataset | versions
    versions: list[DataVersion]
    since: datetime  # when the first of it passed retention

    @property
    def numbers(self) -> list[int]:
        return sorted(v.version for v in self.versions)


def due(session: Session, ds: Dataset, now: datetime | None = None) -> Due | None:
    """The part of `ds` past its retention, or None."""
    if ds.state != DatasetState.active or not ds.retention_days:
        return None
    now = now or utcnow()
    holding = [v for v in service.data_versions(session, ds) if v.state in HOLDING]
    past = [(v, at) for v in holding if (at := expires_at(ds, v)) is not None and at <= now]
    if not past:
        return None
    current = service.current_version(session, ds)
    for v, at in past:
        if current is not None and v.id == current.id:
            return Due(ds, "dataset", holding, at)
    return Due(ds, "versions", [v for v, _at in past], min(at for _v, at in past))


def managed_stmt(actor: Actor) -> Select[Any]:
    """Datasets whose lifecycle the actor looks after: the own org's for stewards (and
    approvers), every one in scope for the bureau."""
    stmt = service.visible_stmt(actor)
    if not actor.can(P.data_admin):
        stmt = stmt.where(Dataset.owner_org_id == actor.org_id)
    return stmt.order_by(Dataset.name)


def expired(session: Session, actor: Actor, now: datetime | None = None) -> list[Due]:
    """Everything past retention among the datasets the actor looks after."""
    out = []
    for ds in session.scalars(managed_stmt(actor).where(Dataset.retention_days.is_not(None))):
        item = due(session, ds, now)
        if item is not None:
            out.append(item)
    return out


# ---- reading requests and certificates -------------------------------------------------------


def certificate_number(d: Destruction) -> str:
    """The certificate's number: XH (销毁) + the day it was done + the request id."""
    day = (d.done_at or d.requested_at).strftime("%Y%m%d")
    return f"XH-{day}-{d.id:06d}"


def last_done(session: Session, dataset_id: int) -> Destruction | None:
    """The latest carried-out destruction of the whole dataset (for the 410 message)."""
    return session.scalar(
        select(Destruction)
        .where(
            Destruction.dataset_id == dataset_id,
            Destruction.scope == "dataset",
            Destruction.state.in_((DestructionState.done, DestructionState.approved)),
        )
        .order_by(Destruction.id.desc())
        .limit(1)
    )


def _can_see(actor: Actor, ds: Dataset) -> bool:
    return actor.can(P.data_admin) or (ds.owner_org_id == actor.org_id and actor.can(P.data_read))


def destructions_stmt(actor: Actor, state: DestructionState | None = None) -> Select[Any]:
    """Requests about datasets the actor looks after, newest first."""
    ids = managed_stmt(actor).with_only_columns(Dataset.id).order_by(None)
    stmt = select(Destruction).where(Destruction.dataset_id.in_(ids))
    if state is not None:
        stmt = stmt.where(Destruction.state == state)
    return stmt.order_by(Destruction.id.desc())


def get_destruction(session: Session, actor: Actor, destruction_id: int) -> tuple[Destruction, Dataset]:
    d = session.get(Destruction, destruction_id)
    ds = session.get(Dataset, d.dataset_id) if d else None
    if d is None or ds is None or not _can_see(actor, ds):
        raise NotFound("No destruction request with this id.")
    if actor.can(P.data_admin) and ds.id not in service.visible_dataset_ids(session, actor):
        raise NotFound("No destruction request with this id.")
    return d, ds


def open_request(session: Session, dataset_id: int) -> Destruction | None:
    return session.scalar(
        select(Destruction).where(
            Destruction.dataset_id == dataset_id,
            Destruction.state.in_((DestructionState.requested, DestructionState.approved)),
        )
    )


def can_decide(actor: Actor, ds: Dataset, d: Destruction) -> bool:
    """An approver of the owner org or the bureau, and not the person who asked."""
    approver = actor.can(P.data_admin) or (actor.can(P.data_approve) and ds.owner_org_id == actor.org_id)
    return approver and actor.username != d.requested_by


def destruction_dict(session: Session, d: Destruction) -> dict[str, Any]:
    ds = session.get(Dataset, d.dataset_id)
    cert = json.loads(d.certificate or "{}")
    return {
        "id": d.id,
        "dataset": ds.name if ds else "",
        "dataset_title": ds.title if ds else "",
        "scope": d.scope,
        "versions": json.loads(d.versions or "[]"),
        "origin": d.origin,
        "reason": d.reason,
        "state": str(d.state),
        "requested_by": d.requested_by,
        "requested_at": d.requested_at,
        "decided_by": d.approved_by,
        "decision_reason": d.decision_reason,
        "decided_at": d.decided_at,
        "done_at": d.done_at,
        "certificate_number": certificate_number(d) if d.state == DestructionState.done else None,
        "files": cert.get("totals", {}).get("files") if d.state == DestructionState.done else None,
    }


def certificate(d: Destruction) -> dict[str, Any]:
    """The certificate of a carried-out destruction; 409 before it is done."""
    if d.state != DestructionState.done:
        raise Conflict("This destruction has not been carried out, so it has no certificate yet.")
    return dict(json.loads(d.certificate))


# ---- requesting ---------------------------------------------------------------------------


def _targets(session: Session, ds: Dataset, scope: str, numbers: list[int]) -> list[DataVersion]:
    """The versions a request removes, checked: each exists and holds files; a request for
    versions cannot name the current one (destroying it is destroying the dataset)."""
    holding = [v for v in service.data_versions(session, ds) if v.state in HOLDING]
    if scope == "dataset":
        return holding
    by_number = {v.version: v for v in service.data_versions(session, ds)}
    current = service.current_version(session, ds)
    out = []
    for n in numbers:
        v = by_number.get(n)
        if v is None:
            raise NotFound("Dataset {name} has no version {version}.", name=ds.name, version=n)
        if v.state not in HOLDING:
            raise Invalid(
                "Version {version} of dataset {name} holds no data ({state}).",
                name=ds.name,
                version=n,
                state=str(v.state),
            )
        if current is not None and v.id == current.id:
            raise Invalid(
                "Version {version} is the current data of dataset {name}; to remove it, ask to "
                "destroy the whole dataset.",
                error_code="current_version",
                name=ds.name,
                version=n,
            )
        out.append(v)
    return out


def request_destruction(
    session: Session,
    actor: Actor,
    name: str,
    *,
    reason: str,
    versions: list[int] | None = None,
) -> Destruction:
    """Ask for the destruction of a dataset (no `versions`) or of some of its earlier versions.
    The owner's stewards (or the bureau) ask; one open request per dataset; the owner org's
    approvers are told in their inbox."""
    ds = service.get_managed(session, actor, name)
    if ds.state != DatasetState.active:
        raise Conflict("Dataset {name} has been destroyed and cannot change.", name=name)
    reason = reason.strip()
    if len(reason) < 4:
        raise Invalid("Say why the data is to be destroyed (at least a few words).", error_code="no_reason")
    numbers = sorted({int(v) for v in versions or []})
    scope = "versions" if numbers else "dataset"
    _targets(session, ds, scope, numbers)
    return _open(session, actor, ds, scope=scope, numbers=numbers, reason=reason, origin="user")


def _open(
    session: Session, actor: Actor, ds: Dataset, *, scope: str, numbers: list[int], reason: str, origin: str
) -> Destruction:
    pending = open_request(session, ds.id)
    if pending is not None:
        raise Conflict(
            "Dataset {name} already has an open destruction request ({id}).", name=ds.name, id=pending.id
        )
    d = Destruction(
        dataset_id=ds.id,
        scope=scope,
        versions=json.dumps(numbers),
        origin=origin,
        requested_by=actor.username,
        reason=reason,
        state=DestructionState.requested,
        requested_at=utcnow(),
    )
    session.add(d)
    session.flush()
    audit.record(
        session,
        actor,
        "data.destruction.request",
        "data_destruction",
        d.id,
        after={"dataset": ds.name, "scope": scope, "versions": numbers, "reason": reason, "origin": origin},
    )
    from civicgrid.data.access import notify_org

    notify_org(
        session,
        f"data.destruction:{d.id}:requested",
        org_id=ds.owner_org_id,
        message=N_("Destruction request {id} for dataset {name} waits for an approver."),
        id=d.id,
        name=ds.name,
    )
    return d


# ---- deciding ------------------------------------------------------------------------------


def _decidable(session: Session, actor: Actor, destruction_id: int) -> tuple[Destruction, Dataset]:
    d, ds = get_destruction(session, actor, destruction_id)
    if d.state != DestructionState.requested:
        raise Conflict(
            "This destruction request was already decided ({state}).",
            error_code="decided",
            state=str(d.state),
        )
    if actor.username == d.requested_by:
        raise PermissionDenied(
            "You asked for this destruction, so another approver must decide it.", error_code="own_request"
        )
    if not can_decide(actor, ds, d):
        raise PermissionDenied(
            "Only an approver of the organisation that owns dataset {name}, or the big-data bureau, "
            "decides its destruction.",
            name=ds.name,
        )
    return d, ds


def refuse_destruction(session: Session, actor: Actor, destruction_id: int, *, reason: str) -> Destruction:
    """The approver keeps the data; the reason is required and shown to the requester."""
    d, ds = _decidable(session, actor, destruction_id)
    reason = reason.strip()
    if not reason:
        raise Invalid("Give a reason for the refusal.", error_code="no_reason")
    d.state = DestructionState.refused
    d.approved_by = actor.username
    d.decision_reason = reason
    d.decided_at = utcnow()
    audit.record(
        session,
        actor,
        "data.destruction.refuse",
        "data_destruction",
        d.id,
        before={"state": "requested"},
        after={"state": "refused", "dataset": ds.name, "reason": reason},
    )
    return d


def _manifest(ds: Dataset, targets: list[DataVersion], others: list[DataVersion]) -> list[dict[str, Any]]:
    """Every file the destruction removes, with its size and SHA-256, hashed before removal.
    `kept_in`: later versions that hold the same file (an append version hard-links the earlier
    rows' files, so their bytes stay until those versions go too)."""
    eng = service.engine()
    shared: dict[tuple[int, int], list[int]] = {}
    for v in others:
        for f in eng.version_files(v.path):
            st = f.stat()
            shared.setdefault((st.st_dev, st.st_ino), []).append(v.version)
    out: list[dict[str, Any]] = []
    for v in targets:
        folder = eng.data_dir / v.path if v.path else None
        if folder is None or not folder.is_dir():
            continue
        for f in sorted(p for p in folder.rglob("*") if p.is_file()):
            st = f.stat()
            out.append(
                {
                    "file": str(f.relative_to(eng.data_dir)),
                    "version": v.version,
                    "bytes": st.st_size,
                    "sha256": file_sha256(f),
                    "kept_in": sorted(shared.get((st.st_dev, st.st_ino), [])),
                }
            )
    return out


def approve_destruction(
    session: Session, actor: Actor, destruction_id: int, *, reason: str = ""
) -> Destruction:
    """Approve and carry out a destruction. The decision is committed first — the dataset (or
    the versions) are destroyed for every reader from then on, the live grants on a destroyed
    dataset end and its pending applications are refused — then the files are removed and the
    certificate written (also committed by the caller)."""
    d, ds = _decidable(session, actor, destruction_id)
    # The dataset's row, locked and re-read: a load publishing a version either committed first
    # (its version is among the targets) or waits and then finds the dataset destroyed.
    session.scalar(
        select(Dataset).where(Dataset.id == ds.id).with_for_update().execution_options(populate_existing=True)
    )
    running = session.scalar(
        select(DataVersion.version).where(
            DataVersion.dataset_id == ds.id,
            DataVersion.state == VersionState.loading,
            DataVersion.created_at > utcnow() - LOAD_RUNS_AT_MOST,
        )
    )
    if running is not None and d.scope == "dataset":
        # A load publishing after the files went would leave data behind a destroyed entry.
        raise Conflict(
            "A load of dataset {name} is running (version {version}); approve when it has finished.",
            name=ds.name,
            version=running,
        )
    numbers = json.loads(d.versions or "[]")
    try:
        targets = _targets(session, ds, d.scope, numbers)
    except (Invalid, NotFound) as exc:
        raise Conflict(
            "The data this request names has changed since it was made ({reason}); refuse it and ask again.",
            reason=exc.translated(),
        ) from exc
    others = [
        v
        for v in service.data_versions(session, ds)
        if v.state in HOLDING and v.id not in {t.id for t in targets}
    ]
    now = utcnow()
    manifest = _manifest(ds, targets, others)
    d.state = DestructionState.approved
    d.approved_by = actor.username
    d.decision_reason = reason.strip()
    d.decided_at = now
    d.certificate = json.dumps(
        {
            "manifest": manifest,
            "versions": [_version_record(v) for v in targets],
        },
        ensure_ascii=False,
        default=str,
    )
    if d.scope == "versions":
        d.versions = json.dumps(sorted(v.version for v in targets))
    for v in targets:
        v.state = VersionState.destroyed
    if d.scope == "dataset":
        ds.state = DatasetState.destroyed
        _end_access(session, actor, ds, now)
    audit.record(
        session,
        actor,
        "data.destruction.approve",
        "data_destruction",
        d.id,
        before={"state": "requested"},
        after={
            "state": "approved",
            "dataset": ds.name,
            "scope": d.scope,
            "versions": sorted(v.version for v in targets),
            "files": len(manifest),
        },
    )
    # Durable before any file is touched: a crash from here on leaves an approved request that
    # the worker finishes from the manifest, never files removed under a live dataset.
    session.commit()
    return carry_out(session, d)


def _version_record(v: DataVersion) -> dict[str, Any]:
    return {
        "version": v.version,
        "mode": v.mode,
        "rows": v.rows,
        "bytes": v.bytes,
        "sha256": v.sha256,
        "source": v.source,
        "loaded_at": (v.finished_at or v.created_at).isoformat(),
        "loaded_by": v.created_by,
    }


def _end_access(session: Session, actor: Actor, ds: Dataset, now: datetime) -> None:
    """A destroyed dataset is read by no one: its live grants end, its pending applications are refused."""
    for g in session.scalars(
        select(Grant).where(Grant.dataset_id == ds.id, Grant.revoked_at.is_(None), Grant.expires_at > now)
    ):
        g.revoked_at = now
        audit.record(
            session,
            actor,
            "data.grant.revoke",
            "data_grant",
            g.id,
            before={"live": True},
            after={"live": False, "reason": "dataset destroyed", "dataset": ds.name},
        )
    for app in session.scalars(
        select(Application).where(
            Application.dataset_id == ds.id, Application.state == ApplicationState.pending
        )
    ):
        app.state = ApplicationState.refused
        app.decided_by = actor.username
        app.decision_reason = "数据集已销毁 (the dataset was destroyed)"
        audit.record(
            session,
            actor,
            "data.application.refuse",
            "data_application",
            app.id,
            before={"state": "pending"},
            after={"state": "refused", "reason": "dataset destroyed"},
        )


def carry_out(session: Session, d: Destruction) -> Destruction:
    """Remove the files of an approved destruction and write its certificate. Safe to run
    again after an interruption: files already gone are certified from the manifest hashed
    before removal."""
    if d.state != DestructionState.approved:
        raise Conflict("This destruction is not approved, so nothing is removed.")
    ds = session.get(Dataset, d.dataset_id)
    assert ds is not None
    eng = service.engine()
    draft = json.loads(d.certificate or "{}")
    manifest: list[dict[str, Any]] = draft.get("manifest", [])
    records: list[dict[str, Any]] = draft.get("versions", [])
    removed: dict[str, dict[str, Any]] = {}
    for rec in records:
        for f in eng.remove_version(eng.version_path(ds.name, int(rec["version"]))):
            removed[f["file"]] = f
    if d.scope == "dataset":
        # Whatever else lies under the dataset's folder (a crashed load's staging) goes too.
        folder = eng.dataset_dir(ds.name)
        if folder.is_dir():
            for f in eng.remove_version(str(folder.relative_to(eng.data_dir))):
                removed[f["file"]] = f
    files: list[dict[str, Any]] = []
    seen: set[str] = set()
    for m in manifest:
        got = removed.get(m["file"])
        # Removed now (hash checked again by the engine), or earlier by an interrupted run.
        state = (
            "removed"
            if got is not None
            else ("absent" if not (eng.data_dir / m["file"]).exists() else "kept")
        )
        if got is not None and got["sha256"] != m["sha256"]:
            state = "removed_changed"  # the file changed between approval and removal
        files.append({**m, "removed": state})
        seen.add(m["file"])
    for name, f in sorted(removed.items()):
        if name not in seen:
            files.append({**f, "version": _version_of(name), "kept_in": [], "removed": "removed"})
    left = [f["file"] for f in files if f["removed"] == "kept"]
    if left:
        raise Conflict(
            "Some files could not be removed; the destruction stays open: {files}", files=", ".join(left)
        )
    now = utcnow()
    d.state = DestructionState.done
    d.done_at = now
    org = session.get(Org, ds.owner_org_id)
    cert: dict[str, Any] = {
        "number": certificate_number(d),
        "dataset": ds.name,
        "dataset_title": ds.title,
        "owner_org": org.code if org else "",
        "owner_org_name": org.name if org else "",
        "scope": d.scope,
        "versions": records,
        "reason": d.reason,
        "origin": d.origin,
        "requested_by": d.requested_by,
        "requested_at": d.requested_at.isoformat(),
        "approved_by": d.approved_by,
        "approved_at": d.decided_at.isoformat() if d.decided_at else None,
        "approval_note": d.decision_reason,
        "done_at": now.isoformat(),
        "files": files,
        "totals": {
            "files": len(files),
            "bytes": sum(int(f["bytes"]) for f in files),
            "rows": sum(int(r.get("rows") or 0) for r in records),
            "still_linked": sum(1 for f in files if f.get("kept_in")),
        },
    }
    cert["sha256"] = certificate_digest(cert)
    d.certificate = json.dumps(cert, ensure_ascii=False, sort_keys=True)
    for v in session.scalars(
        select(DataVersion).where(
            DataVersion.dataset_id == ds.id, DataVersion.version.in_([int(r["version"]) for r in records])
        )
    ):
        q = json.loads(v.quality or "{}")
        q.pop("first_rejects", None)  # examples of destroyed rows go with them
        v.quality = json.dumps(q, ensure_ascii=False, default=str)
    audit.record(
        session,
        SYSTEM if not d.approved_by else _named(d.approved_by),
        "data.destruction.done",
        "data_destruction",
        d.id,
        extra={
            "certificate": cert["number"],
            "certificate_sha256": cert["sha256"],
            "dataset": ds.name,
            "files": cert["totals"]["files"],
            "bytes": cert["totals"]["bytes"],
        },
    )
    session.flush()
    return d


def certificate_digest(cert: dict[str, Any]) -> str:
    """SHA-256 of the certificate without its own digest (canonical JSON); the audit log keeps
    it, so a certificate altered afterwards no longer matches its hash-chained record."""
    body = {k: v for k, v in cert.items() if k != "sha256"}
    return hashlib.sha256(
        json.dumps(body, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()


def _version_of(path: str) -> int | None:
    for part in Path(path).parts:
        if part.startswith("v") and part[1:].isdigit():
            return int(part[1:])
    return None


def _named(username: str) -> Actor:
    """The audit identity of the approver when the worker finishes their destruction."""
    from dataclasses import replace

    return replace(SYSTEM, username=username, display_name=username)


# ---- the worker ----------------------------------------------------------------------------


def check_retention(session: Session, now: datetime | None = None) -> int:
    """The retention job: open a destruction request for every dataset with data past its
    retention (unless one is open, or the same request was refused within REFUSAL_HOLD_DAYS),
    and finish approved destructions an interruption left undone. Never destroys anything that
    was not approved. Returns the number of requests opened."""
    now = now or utcnow()
    opened = 0
    stmt = select(Dataset).where(Dataset.state == DatasetState.active, Dataset.retention_days.is_not(None))
    for ds in session.scalars(stmt).all():
        item = due(session, ds, now)
        if item is None or open_request(session, ds.id) is not None:
            continue
        numbers = [] if item.scope == "dataset" else item.numbers
        refused = session.scalar(
            select(Destruction.id).where(
                Destruction.dataset_id == ds.id,
                Destruction.state == DestructionState.refused,
                Destruction.scope == item.scope,
                Destruction.versions == json.dumps(numbers),
                Destruction.decided_at > now - timedelta(days=REFUSAL_HOLD_DAYS),
            )
        )
        if refused is not None:
            continue
        _open(
            session,
            SYSTEM,
            ds,
            scope=item.scope,
            numbers=numbers,
            reason=f"保存期限 {ds.retention_days} 天已满 (retention of {ds.retention_days} days passed)",
            origin="retention",
        )
        opened += 1
    stale = select(Destruction).where(
        Destruction.state == DestructionState.approved, Destruction.decided_at < now - FINISH_AFTER
    )
    for d in session.scalars(stale).all():
        carry_out(session, d)
    return opened


def retention_job(session: Session) -> object:
    """Worker entry point (worker.Job)."""
    return check_retention(session)
