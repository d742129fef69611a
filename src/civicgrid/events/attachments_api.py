"""JSON routes for the photos and files of events (rules in `attachments.py`).

Mounted before the events router: `POST /api/v1/events/{number}/attachments` must not be
taken for the workflow step route `POST /api/v1/events/{number}/{action}`.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, File, Request, UploadFile, status
from fastapi.responses import FileResponse
from pydantic import BaseModel

from civicgrid.accounts.permissions import Permission
from civicgrid.core.auth import Actor
from civicgrid.core.deps import SessionDep, requires
from civicgrid.events import attachments, service
from civicgrid.events.models import Attachment

router = APIRouter(prefix="/api/v1", tags=["attachments"])
P = Permission


class AttachmentOut(BaseModel):
    id: int
    filename: str
    mime: str
    size: int
    sha256: str
    url: str
    thumbnail_url: str | None
    created_at: datetime


def out(a: Attachment) -> AttachmentOut:
    return AttachmentOut(
        id=a.id,
        filename=a.filename,
        mime=a.mime,
        size=a.size,
        sha256=a.sha256,
        url=f"/api/v1/attachments/{a.id}",
        thumbnail_url=f"/api/v1/attachments/{a.id}/thumbnail" if a.has_thumbnail else None,
        created_at=a.created_at,
    )


def data_dir(request: Request) -> Path:
    return Path(request.app.state.settings.data_dir)


@router.post(
    "/events/{number}/attachments", response_model=list[AttachmentOut], status_code=status.HTTP_201_CREATED
)
def upload(
    number: str,
    request: Request,
    session: SessionDep,
    actor: Annotated[Actor, requires(P.events_report)],
    files: Annotated[list[UploadFile], File(description="one or several photos or PDF files")],
) -> list[AttachmentOut]:
    """Photos (JPEG, PNG, WebP) and PDF files, at most 10 MB each and 9 per event. The type is
    read from the content; photos are stored without EXIF (no location)."""
    event = service.get_event(session, actor, number)
    # Read one byte past the limit: enough to refuse a file that is too big.
    read = [(f.filename or "file", f.file.read(attachments.MAX_BYTES + 1)) for f in files]
    added = attachments.add_attachments(session, actor, event, read, data_dir=data_dir(request))
    return [out(a) for a in added]


@router.get("/events/{number}/attachments", response_model=list[AttachmentOut])
def list_attachments(
    number: str, session: SessionDep, actor: Annotated[Actor, requires(P.events_report)]
) -> list[AttachmentOut]:
    event = service.get_event(session, actor, number)
    return [out(a) for a in attachments.list_for_event(session, event)]


HEADERS = {
    "X-Content-Type-Options": "nosniff",
    # A stored file never runs script or loads anything, even if a browser opens it directly.
    "Content-Security-Policy": "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; sandbox",
    "Cache-Control": "private, max-age=86400",
}


@router.get("/attachments/{attachment_id}")
def download(
    attachment_id: int,
    request: Request,
    session: SessionDep,
    actor: Annotated[Actor, requires(P.events_report)],
) -> FileResponse:
    a = attachments.get_attachment(session, actor, attachment_id)
    return FileResponse(
        attachments.file_of(a, data_dir=data_dir(request)),
        media_type=a.mime,
        filename=a.filename,
        # Photos open in the browser; documents are downloaded.
        content_disposition_type="inline" if a.mime.startswith("image/") else "attachment",
        headers=HEADERS,
    )


@router.get("/attachments/{attachment_id}/thumbnail")
def download_thumbnail(
    attachment_id: int,
    request: Request,
    session: SessionDep,
    actor: Annotated[Actor, requires(P.events_report)],
) -> FileResponse:
    a = attachments.get_attachment(session, actor, attachment_id)
    stem = a.filename.rsplit(".", 1)[0]
    return FileResponse(
        attachments.file_of(a, data_dir=data_dir(request), thumb=True),
        media_type="image/jpeg",
        filename=f"{stem}-thumbnail.jpg",
        content_disposition_type="inline",
        headers=HEADERS,
    )
