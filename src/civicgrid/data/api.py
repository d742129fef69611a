"""JSON routes of the data catalogue and ingestion under /api/v1/data: thin calls into
`data.service` and `data.ingest`.

SQL pulls are not offered over HTTP: a database URL would let a web user make the server
connect anywhere (or open its own files); they run from the CLI on the server.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, BackgroundTasks, File, Form, Query, Request, Response, UploadFile, status
from sqlalchemy import select
from sqlalchemy.orm import Session

from civicgrid.accounts.models import Org
from civicgrid.accounts.permissions import Permission
from civicgrid.core.auth import Actor
from civicgrid.core.config import get_settings
from civicgrid.core.deps import SessionDep, requires
from civicgrid.core.errors import Invalid, PermissionDenied
from civicgrid.core.pagination import Page, PageDep, paginate
from civicgrid.data import ingest, lifecycle, service
from civicgrid.data.models import Dataset, DataVersion, DestructionState, ShareClass, Theme
from civicgrid.data.schemas import (
    DatasetIn,
    DatasetOut,
    DatasetPatch,
    DataVersionOut,
    DecisionIn,
    DestructionIn,
    DestructionOut,
    DueOut,
    FieldOut,
    MetadataVersionOut,
    RejectedPage,
)

router = APIRouter(prefix="/api/v1/data", tags=["data catalogue"])
P = Permission
Reader = Annotated[Actor, requires(P.data_read)]
Steward = Annotated[Actor, requires(P.data_read, P.data_manage)]


def dataset_out(session: Session, ds: Dataset, actor: Actor) -> DatasetOut:
    org = session.get(Org, ds.owner_org_id)
    current = service.current_version(session, ds)
    return DatasetOut(
        name=ds.name,
        title=ds.title,
        title_en=ds.title_en,
        description=ds.description,
        description_en=ds.description_en,
        tags=service.tags_of(ds),
        theme=ds.theme,
        grade=ds.grade,
        share_class=ds.share_class,
        share_condition=ds.share_condition,
        open_class=ds.open_class,
        update_frequency=ds.update_frequency,
        source_system=ds.source_system,
        spatial_scope=ds.spatial_scope,
        retention_days=ds.retention_days,
        k_threshold=ds.k_threshold,
        state=str(ds.state),
        owner_org=org.code if org else "",
        owner_org_name=org.name if org else "",
        metadata_version=ds.metadata_version,
        current_version=current.version if current else None,
        rows=current.rows if current else 0,
        updated_at=ds.updated_at,
        fields=[FieldOut(**service.field_dict(f)) for f in ds.fields],
        can_manage=service.can_manage(actor, ds),
    )


def version_out(dv: DataVersion) -> DataVersionOut:
    return DataVersionOut(
        version=dv.version,
        mode=dv.mode,
        state=str(dv.state),
        rows=dv.rows,
        rejected=dv.rejected,
        bytes=dv.bytes,
        sha256=dv.sha256,
        source=dv.source,
        progress=dv.progress,
        created_by=dv.created_by,
        created_at=dv.created_at,
        finished_at=dv.finished_at,
        error=ingest.error_text(dv),
        quality=service.quality(dv),
    )


@router.get("/datasets", response_model=Page[DatasetOut])
def list_datasets(
    session: SessionDep,
    actor: Reader,
    page: PageDep,
    owner_org: Annotated[str | None, Query(max_length=64)] = None,
    theme: Theme | None = None,
    share_class: ShareClass | None = None,
    q: Annotated[str, Query(max_length=100)] = "",
) -> Page[DatasetOut]:
    """The catalogue entries you may see, by name."""
    owner_id = None
    if owner_org:
        owner_id = session.scalar(select(Org.id).where(Org.code == owner_org))
        if owner_id is None:
            return Page(items=[], total=0, page=page.page, size=page.size)
    stmt = service.list_stmt(actor, owner_org_id=owner_id, theme=theme, share_class=share_class, q=q)
    rows, total = paginate(session, stmt, page)
    return Page(
        items=[dataset_out(session, d, actor) for d in rows], total=total, page=page.page, size=page.size
    )


@router.post("/datasets", response_model=DatasetOut, status_code=status.HTTP_201_CREATED)
def create_dataset(session: SessionDep, actor: Steward, body: DatasetIn) -> DatasetOut:
    """Register a dataset for your org (the bureau: for any org in its scope)."""
    data = body.model_dump()
    fields = data.pop("fields")
    ds = service.create_dataset(session, actor, fields=fields, **data)
    return dataset_out(session, ds, actor)


@router.get("/datasets/{name}", response_model=DatasetOut)
def get_dataset(session: SessionDep, actor: Reader, name: str) -> DatasetOut:
    return dataset_out(session, service.get_visible(session, actor, name), actor)


@router.patch("/datasets/{name}", response_model=DatasetOut)
def update_dataset(session: SessionDep, actor: Steward, name: str, body: DatasetPatch) -> DatasetOut:
    """Change metadata and/or fields; every change is kept as a metadata version."""
    data = body.model_dump(exclude_unset=True)
    expected = data.pop("expected_version", None)
    fields = data.pop("fields", None)
    ds = service.update_dataset(session, actor, name, expected_version=expected, fields=fields, **data)
    return dataset_out(session, ds, actor)


@router.get("/datasets/{name}/metadata-versions", response_model=list[MetadataVersionOut])
def metadata_versions(session: SessionDep, actor: Reader, name: str) -> list[MetadataVersionOut]:
    ds = service.get_visible(session, actor, name)
    return [
        MetadataVersionOut(
            version=m.version, changed_by=m.changed_by, at=m.at, snapshot=json.loads(m.snapshot)
        )
        for m in service.metadata_versions(session, ds)
    ]


@router.get("/datasets/{name}/versions", response_model=list[DataVersionOut])
def data_versions(session: SessionDep, actor: Reader, name: str) -> list[DataVersionOut]:
    """Every load of the dataset, newest first, with its quality report and state."""
    ds = service.get_visible(session, actor, name)
    return [version_out(v) for v in service.data_versions(session, ds)]


@router.get("/datasets/{name}/versions/{version}", response_model=DataVersionOut)
def data_version(session: SessionDep, actor: Reader, name: str, version: int) -> DataVersionOut:
    """One load: poll it for `progress` while its state is loading."""
    ds = service.get_visible(session, actor, name)
    return version_out(service.get_version(session, ds, version))


@router.get("/datasets/{name}/versions/{version}/rejected", response_model=RejectedPage)
def rejected_rows(
    session: SessionDep,
    actor: Steward,
    name: str,
    version: int,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> RejectedPage:
    """The rows a load rejected, raw, with line and reasons: for the owner's stewards only."""
    ds = service.get_visible(session, actor, name)
    if not service.can_manage(actor, ds):
        raise PermissionDenied("Only the owner's data stewards may change dataset {name}.", name=name)
    dv = service.get_version(session, ds, version)
    rows = service.engine().read_rejected(dv.path, limit=limit, offset=offset) if dv.path else []
    return RejectedPage(version=dv.version, rejected=dv.rejected, rows=rows)


def _save_upload(upload: UploadFile) -> Path:
    folder = get_settings().data_dir / "uploads"
    folder.mkdir(parents=True, exist_ok=True)
    suffix = Path(upload.filename or "").suffix.lower()[:10]
    target = folder / f"{uuid.uuid4().hex}{suffix}"
    with target.open("wb") as out:
        shutil.copyfileobj(upload.file, out, length=1 << 20)
    return target


@router.post("/datasets/{name}/loads", response_model=DataVersionOut, status_code=status.HTTP_201_CREATED)
def load_file(
    request: Request,
    response: Response,
    session: SessionDep,
    actor: Steward,
    background: BackgroundTasks,
    name: str,
    file: Annotated[UploadFile, File(description="CSV (UTF-8 or GBK), .xlsx, JSON array or NDJSON")],
    mode: Annotated[Literal["append", "replace"], Form()] = "append",
    format: Annotated[Literal["csv", "xlsx", "json", "ndjson"] | None, Form()] = None,
    sheet: Annotated[str | None, Form(max_length=100)] = None,
    wait: Annotated[bool, Form(description="false: answer 202 at once and poll the version")] = True,
) -> DataVersionOut:
    """Load a file as a new version. A load that fails answers 422 with the first bad rows
    (line numbers) and leaves the current version as it was."""
    db = request.app.state.db
    dv = ingest.start_load(session, actor, name, mode=mode, source=file.filename or "upload")
    session.commit()  # the load runs in its own transactions; its row must be visible to them
    path = _save_upload(file)

    def run() -> DataVersion:
        try:
            return ingest.run_load(db, actor, dv.id, path=path, fmt=format, sheet=sheet)
        finally:
            ingest.remove_upload(path)

    if not wait:
        background.add_task(_run_quietly, run)
        response.status_code = status.HTTP_202_ACCEPTED
        return version_out(dv)
    return version_out(run())


def _run_quietly(run: Callable[[], object]) -> None:
    """A background load: its outcome is in its DataVersion row, so errors end here."""
    with contextlib.suppress(Exception):
        run()


# ---- lifecycle: retention and destruction ---------------------------------------------------------

Approver = Annotated[Actor, requires(P.data_read)]  # the service checks approver rights per dataset


@router.get("/retention/due", response_model=list[DueOut])
def retention_due(session: SessionDep, actor: Reader) -> list[DueOut]:
    """Data past its retention among the datasets you look after (owner stewards, the bureau)."""
    out = []
    for item in lifecycle.expired(session, actor):
        pending = lifecycle.open_request(session, item.dataset.id)
        out.append(
            DueOut(
                dataset=item.dataset.name,
                title=item.dataset.title,
                retention_days=item.dataset.retention_days or 0,
                scope=item.scope,
                versions=item.numbers,
                since=item.since,
                open_request=pending.id if pending else None,
            )
        )
    return out


def _destruction_state(value: str) -> DestructionState | None:
    if value in ("", "all"):
        return None
    try:
        return DestructionState(value)
    except ValueError:
        raise Invalid("Unknown state {state}.", state=value) from None


@router.get("/destructions", response_model=Page[DestructionOut])
def list_destructions(
    session: SessionDep,
    actor: Reader,
    page: PageDep,
    state: Annotated[str, Query(max_length=16)] = "all",
) -> Page[DestructionOut]:
    """Destruction requests about the datasets you look after, newest first."""
    rows, total = paginate(session, lifecycle.destructions_stmt(actor, _destruction_state(state)), page)
    return Page(
        items=[DestructionOut(**lifecycle.destruction_dict(session, d)) for d in rows],
        total=total,
        page=page.page,
        size=page.size,
    )


@router.post("/destructions", response_model=DestructionOut, status_code=status.HTTP_201_CREATED)
def request_destruction(session: SessionDep, actor: Steward, body: DestructionIn) -> DestructionOut:
    """Ask for the destruction of a dataset (no versions) or of some of its earlier versions."""
    d = lifecycle.request_destruction(
        session, actor, body.dataset, reason=body.reason, versions=body.versions or None
    )
    return DestructionOut(**lifecycle.destruction_dict(session, d))


@router.get("/destructions/{destruction_id}", response_model=DestructionOut)
def get_destruction(session: SessionDep, actor: Reader, destruction_id: int) -> DestructionOut:
    d, _ds = lifecycle.get_destruction(session, actor, destruction_id)
    return DestructionOut(**lifecycle.destruction_dict(session, d))


@router.post("/destructions/{destruction_id}/approve", response_model=DestructionOut)
def approve_destruction(
    session: SessionDep, actor: Approver, destruction_id: int, body: DecisionIn
) -> DestructionOut:
    """Approve (not your own request): the files are removed and the certificate recorded."""
    d = lifecycle.approve_destruction(session, actor, destruction_id, reason=body.reason)
    return DestructionOut(**lifecycle.destruction_dict(session, d))


@router.post("/destructions/{destruction_id}/refuse", response_model=DestructionOut)
def refuse_destruction(
    session: SessionDep, actor: Approver, destruction_id: int, body: DecisionIn
) -> DestructionOut:
    d = lifecycle.refuse_destruction(session, actor, destruction_id, reason=body.reason)
    return DestructionOut(**lifecycle.destruction_dict(session, d))


@router.get("/destructions/{destruction_id}/certificate")
def destruction_certificate(session: SessionDep, actor: Reader, destruction_id: int) -> dict[str, object]:
    """The destruction certificate (销毁证明): what, when, who asked, who approved, and the
    SHA-256 and size of every removed file; `sha256` is the certificate's own digest, also kept
    in the hash-chained audit log."""
    d, _ds = lifecycle.get_destruction(session, actor, destruction_id)
    return lifecycle.certificate(d)
