"""Hotline (12345) import: the page (upload → column mapping → dry-run report → commit, with
progress polled by htmx) and its JSON endpoints under /api/v1/hotline/imports.

Thin: the rules live in `events.hotline`. A route that starts work records the job in its
own transaction and starts the job's thread as a background task, i.e. after that
transaction has committed, so the thread always finds the row.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Body, Depends, Request, status
from fastapi.responses import RedirectResponse, Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from civicgrid.accounts.permissions import Permission
from civicgrid.core.auth import Actor
from civicgrid.core.deps import SessionDep, requires
from civicgrid.core.errors import Invalid
from civicgrid.core.i18n import gettext
from civicgrid.core.web import render
from civicgrid.events import hotline
from civicgrid.events.models import ImportJob, ImportStatus

router = APIRouter()
P = Permission
Importer = Annotated[Actor, requires(P.events_import)]
PAGE_PROBLEMS = 1000  # rows of the report a page shows; the CSV download has them all
PAGE_EVENTS = 200

N_ = hotline.N_
STATUS_LABELS = {
    ImportStatus.mapping: N_("Needs a column mapping"),
    ImportStatus.validating: N_("Checking"),
    ImportStatus.validated: N_("Checked"),
    ImportStatus.committing: N_("Importing"),
    ImportStatus.committed: N_("Imported"),
    ImportStatus.failed: N_("Failed"),
}


def limit_body(request: Request) -> None:
    """Refuse an upload whose declared size is over the limit before anything reads the body."""
    length = request.headers.get("content-length", "")
    if length.isdigit():
        hotline.check_size(max(int(length) - 64 * 1024, 0))  # room for the multipart envelope


BodyLimit = Annotated[None, Depends(limit_body)]


async def read_upload(request: Request) -> tuple[str, bytes, str]:
    """The uploaded file's name and bytes, and the optional `mapping` field."""
    form = await request.form(max_files=1, max_fields=20)
    file = form.get("file")
    if not isinstance(file, UploadFile) or not file.filename:
        raise Invalid("Choose a file to upload.", error_code="no_file")
    content = await file.read(hotline.MAX_BYTES + 1)
    mapping = form.get("mapping")
    return file.filename, content, mapping if isinstance(mapping, str) else ""


def local(at: datetime | None) -> str:
    return at.astimezone(hotline.LOCAL_TZ).strftime("%Y-%m-%d %H:%M") if at else ""


def parse_mapping(text: str) -> dict[str, Any] | None:
    if not text.strip():
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise Invalid(
            "The column mapping must be a JSON object of header → field.", error_code="bad_mapping"
        ) from None
    if not isinstance(value, dict):
        raise Invalid("The column mapping must be a JSON object of header → field.", error_code="bad_mapping")
    return value


def done(request: Request, url: str) -> Response:
    """After a form post: htmx follows HX-Redirect, a plain form a 303."""
    if request.headers.get("hx-request"):
        return Response(status_code=204, headers={"HX-Redirect": url})
    return RedirectResponse(url, status_code=303)


def start(background: BackgroundTasks, request: Request, job: ImportJob) -> None:
    if job.status in (ImportStatus.validating, ImportStatus.committing):
        background.add_task(hotline.start_job, request.app.state.db, job.id)


# ---- what the page and the API show --------------------------------------------------------


def job_view(job: ImportJob, *, full: bool = False) -> dict[str, Any]:
    phase, done_, total = hotline.progress_of(job)
    running = job.status in (ImportStatus.validating, ImportStatus.committing) and not hotline.is_stale(job)
    view: dict[str, Any] = {
        "id": job.id,
        "status": str(job.status),
        "status_label": gettext(STATUS_LABELS[job.status]),
        "running": running,
        "stale": hotline.is_stale(job),
        "filename": job.filename,
        "file_type": job.file_type,
        "encoding": job.encoding,
        "size_kb": max(1, round(job.size / 1024)),
        "uploaded_at": local(job.created_at),
        "committed_at": local(job.committed_at),
        "header_line": job.header_line,
        "headers": json.loads(job.headers),
        "mapping": json.loads(job.mapping),
        "missing": [
            gettext(hotline.FIELD_LABELS[f]) for f in hotline.missing_fields(json.loads(job.mapping))
        ],
        "phase": phase,
        "done": done_,
        "total": total,
        "percent": int(100 * done_ / total) if total else 0,
        "rows": job.rows,
        "ok_rows": job.ok_rows,
        "bad_rows": job.bad_rows,
        "skipped_rows": job.skipped_rows,
        "created_rows": job.created_rows,
        "error": hotline.error_of(job),
    }
    if full and not running:
        problems = hotline.problems_of(job)
        rows = [
            {"line": p.line, "ticket": p.ticket, "reasons": p.messages()} for p in problems if not p.skipped
        ]
        skipped = [
            {"line": p.line, "ticket": p.ticket, "reasons": p.messages()} for p in problems if p.skipped
        ]
        view["problems"] = rows
        view["skipped"] = skipped
        view["events"] = [{"line": line, "number": number} for line, number in hotline.created_of(job)]
    return view


# ---- pages ------------------------------------------------------------------------------------


@router.get("/events/import", include_in_schema=False)
def import_page(request: Request, session: SessionDep, actor: Importer) -> Response:
    jobs = [job_view(j) for j in hotline.visible_jobs(session, actor)]
    return render(
        request,
        "events/hotline.html",
        jobs=jobs,
        max_mb=hotline.MAX_BYTES // 1024 // 1024,
        max_rows=f"{hotline.MAX_ROWS:,}",
    )


@router.post("/events/import", include_in_schema=False)
async def upload(
    request: Request,
    _limit: BodyLimit,
    session: SessionDep,
    actor: Importer,
    background: BackgroundTasks,
) -> Response:
    filename, content, _ = await read_upload(request)
    job = await run_in_threadpool(lambda: hotline.new_job(session, actor, filename=filename, content=content))
    start(background, request, job)
    return done(request, f"/events/import/{job.id}")


@router.get("/events/import/{job_id}", include_in_schema=False)
def job_page(request: Request, job_id: int, session: SessionDep, actor: Importer) -> Response:
    job = hotline.get_job(session, actor, job_id)
    fields = [(f, hotline.FIELD_LABELS[f], f in hotline.REQUIRED) for f in hotline.FIELDS]
    return render(
        request,
        "events/hotline_job.html",
        job=job_view(job, full=True),
        own=job.user_id == actor.user_id,
        fields=fields,
        page_problems=PAGE_PROBLEMS,
        page_events=PAGE_EVENTS,
    )


@router.get("/events/import/{job_id}/progress", include_in_schema=False)
def progress_fragment(
    request: Request, job_id: int, session: SessionDep, actor: Importer, poll: bool = False
) -> Response:
    """The progress box; polled every second while the job runs. When a polled job has finished
    the whole page reloads, so the column mapping and the buttons match the new state."""
    job = hotline.get_job(session, actor, job_id)
    view = job_view(job, full=True)
    res = render(
        request,
        "events/_hotline_progress.html",
        job=view,
        own=job.user_id == actor.user_id,
        page_problems=PAGE_PROBLEMS,
        page_events=PAGE_EVENTS,
    )
    if poll and not view["running"]:
        res.headers["HX-Refresh"] = "true"
    return res


@router.post("/events/import/{job_id}/mapping", include_in_schema=False)
async def mapping_form(
    request: Request, job_id: int, session: SessionDep, actor: Importer, background: BackgroundTasks
) -> Response:
    """The form names columns by position (`col-<i>`), so any header text is safe in it."""
    form = await request.form(max_fields=hotline.MAX_COLUMNS + 10)

    def apply() -> ImportJob:
        headers = json.loads(hotline.get_job(session, actor, job_id).headers)
        custom = {h: str(form.get(f"col-{i}") or "") for i, h in enumerate(headers)}
        return hotline.set_mapping(session, actor, job_id, custom)

    job = await run_in_threadpool(apply)
    start(background, request, job)
    return done(request, f"/events/import/{job.id}")


@router.post("/events/import/{job_id}/recheck", include_in_schema=False)
def recheck(
    request: Request, job_id: int, session: SessionDep, actor: Importer, background: BackgroundTasks
) -> Response:
    job = hotline.revalidate(session, actor, job_id)
    start(background, request, job)
    return done(request, f"/events/import/{job.id}")


@router.post("/events/import/{job_id}/commit", include_in_schema=False)
def commit(
    request: Request, job_id: int, session: SessionDep, actor: Importer, background: BackgroundTasks
) -> Response:
    job = hotline.request_commit(session, actor, job_id)
    start(background, request, job)
    return done(request, f"/events/import/{job.id}")


@router.get("/events/import/{job_id}/problems.csv", include_in_schema=False)
def problems_csv(job_id: int, session: SessionDep, actor: Importer) -> Response:
    """Every bad and skipped row with its reasons, for fixing the file in Excel (UTF-8 with BOM)."""
    job = hotline.get_job(session, actor, job_id)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([gettext("Row"), gettext("Ticket number"), gettext("Result"), gettext("Reasons")])
    for p in hotline.problems_of(job):
        writer.writerow(
            [
                p.line,
                p.ticket,
                gettext("Skipped") if p.skipped else gettext("Bad row"),
                "；".join(p.messages()),
            ]
        )
    return Response(
        "\ufeff" + out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="import-{job.id}-problems.csv"'},
    )


# ---- JSON -------------------------------------------------------------------------------------


class ProblemOut(BaseModel):
    line: int
    ticket: str
    reasons: list[str]


class CreatedOut(BaseModel):
    line: int
    number: str


class ImportOut(BaseModel):
    id: int
    status: str
    filename: str
    file_type: str
    encoding: str
    headers: list[str]
    mapping: dict[str, str]
    missing: list[str]
    phase: str
    done: int
    total: int
    rows: int
    ok_rows: int
    bad_rows: int
    skipped_rows: int
    created_rows: int
    error: str
    problems: list[ProblemOut] = []
    skipped: list[ProblemOut] = []
    events: list[CreatedOut] = []


def import_out(job: ImportJob, *, full: bool = True) -> ImportOut:
    return ImportOut.model_validate(job_view(job, full=full))


UPLOAD_DOC = {
    "requestBody": {
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "mapping": {
                            "type": "string",
                            "description": 'JSON object header → field, e.g. {"单号": "external_id"}',
                        },
                    },
                }
            }
        }
    }
}


@router.post(
    "/api/v1/hotline/imports",
    response_model=ImportOut,
    status_code=status.HTTP_202_ACCEPTED,
    tags=["events"],
    openapi_extra=UPLOAD_DOC,
)
async def api_upload(
    request: Request,
    _limit: BodyLimit,
    session: SessionDep,
    actor: Importer,
    background: BackgroundTasks,
) -> ImportOut:
    """Upload a 12345 export (CSV or .xlsx) and start its dry run; poll the job for the report."""
    filename, content, mapping_text = await read_upload(request)
    custom = parse_mapping(mapping_text)

    job = await run_in_threadpool(
        lambda: hotline.new_job(session, actor, filename=filename, content=content, custom_mapping=custom)
    )
    start(background, request, job)
    return import_out(job, full=False)


@router.get("/api/v1/hotline/imports", response_model=list[ImportOut], tags=["events"])
def api_list(session: SessionDep, actor: Importer) -> list[ImportOut]:
    return [import_out(j, full=False) for j in hotline.visible_jobs(session, actor)]


@router.get("/api/v1/hotline/imports/{job_id}", response_model=ImportOut, tags=["events"])
def api_get(job_id: int, session: SessionDep, actor: Importer) -> ImportOut:
    """The job with its progress, and once checked every bad row (line number and reasons)."""
    return import_out(hotline.get_job(session, actor, job_id))


@router.put(
    "/api/v1/hotline/imports/{job_id}/mapping",
    response_model=ImportOut,
    status_code=status.HTTP_202_ACCEPTED,
    tags=["events"],
)
def api_mapping(
    request: Request,
    job_id: int,
    mapping: Annotated[dict[str, str | None], Body()],
    session: SessionDep,
    actor: Importer,
    background: BackgroundTasks,
) -> ImportOut:
    """Set the column mapping (header → field, null to ignore a column; columns left out keep
    the default mapping) and check again."""
    job = hotline.set_mapping(session, actor, job_id, mapping)
    start(background, request, job)
    return import_out(job, full=False)


@router.post(
    "/api/v1/hotline/imports/{job_id}/commit",
    response_model=ImportOut,
    status_code=status.HTTP_202_ACCEPTED,
    tags=["events"],
)
def api_commit(
    request: Request, job_id: int, session: SessionDep, actor: Importer, background: BackgroundTasks
) -> ImportOut:
    """Create every event of a clean dry run, all or nothing; poll the job for the result."""
    job = hotline.request_commit(session, actor, job_id)
    start(background, request, job)
    return import_out(job, full=False)
