"""Photos and files of events: who may add them, what is accepted, how they are cleaned and
stored (docs/decisions-deadlines.md, "Attachments").

Files are stored content-addressed under `<data dir>/attachments/ab/cd/<sha256>` with the
thumbnail beside them (`<sha256>.thumb.jpg`); identical content is stored once. Images are
re-encoded, which drops every metadata block (EXIF with GPS, XMP, comments) after the EXIF
orientation has been applied; the hash is of the cleaned file.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tempfile
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from PIL import Image, ImageOps, UnidentifiedImageError
from sqlalchemy import select
from sqlalchemy.orm import Session

from civicgrid.accounts.permissions import Permission, Role
from civicgrid.core import audit
from civicgrid.core.auth import Actor
from civicgrid.core.config import get_settings
from civicgrid.core.errors import AppError, Invalid, NotFound, PermissionDenied
from civicgrid.events import service
from civicgrid.events.models import OPEN_STATES, Attachment, Event, State

P = Permission

MAX_BYTES = 10 * 1024 * 1024  # per file
MAX_FILES = 9  # per event, as many as a phone's photo picker sends at once
MAX_PIXELS = 50_000_000  # decoded size; a larger image is refused, not decoded
THUMB_PX = 320
JPEG_QUALITY = 90
IMAGE_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
EXTENSIONS = {"image/jpeg": ".jpg", "image/png": ".png", "image/webp": ".webp", "application/pdf": ".pdf"}
HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"}


class TooLarge(AppError):
    status = 413
    code = "too_large"


# ---- who may add files ------------------------------------------------------------------------


def may_attach(session: Session, actor: Actor, event: Event) -> bool:
    """The reporter while the event is open; grid workers (in scope) while it is open; the lead
    department's handlers while handling and with the result; dispatchers of the owner office
    until it is archived. The caller has already checked the actor may see the event."""
    open_ = event.state in OPEN_STATES
    if open_ and event.reporter_user_id and actor.user_id == event.reporter_user_id:
        return True
    if open_ and actor.role == Role.grid_worker:
        return True
    if (
        actor.can(P.events_handle)
        and actor.org_id == event.lead_org_id
        and event.state in (State.dispatched, State.handling, State.handled)
    ):
        return True
    return (
        actor.can(P.events_dispatch)
        and (actor.org_id == event.owner_org_id or actor.role == Role.admin)
        and event.state not in (State.archived, State.merged)
    )


# ---- what is accepted, and how it is cleaned --------------------------------------------------


@dataclass(frozen=True)
class Cleaned:
    filename: str
    mime: str
    data: bytes
    thumbnail: bytes | None
    sha256: str


def sniff(data: bytes) -> str | None:
    """The type from the content's magic bytes (never the name or the client's Content-Type)."""
    if data[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[4:8] == b"ftyp" and data[8:12] in HEIF_BRANDS:
        return "image/heic"
    if data[:5] == b"%PDF-":
        return "application/pdf"
    return None


def clean_name(filename: str, mime: str) -> str:
    """The base name without paths or control characters, with the extension of the real type."""
    base = PurePosixPath((filename or "").replace("\\", "/")).name
    base = "".join(c for c in base if unicodedata.category(c)[0] != "C").strip().strip(".")
    stem = re.sub(r"\.[A-Za-z0-9]{1,5}$", "", base)[:150].strip() or "attachment"
    return stem + EXTENSIONS[mime]


def clean(filename: str, content: bytes) -> Cleaned:
    """Check one upload and return what is stored; raises a clear 4xx for anything refused."""
    if len(content) > MAX_BYTES:
        raise TooLarge(
            "The file {name} is larger than {max} MB.",
            error_code="file_too_large",
            name=filename,
            max=MAX_BYTES // (1024 * 1024),
        )
    kind = sniff(content)
    if kind is None:
        raise Invalid(
            "The file {name} is not a photo (JPEG, PNG, WebP) or a PDF document.",
            error_code="file_type",
            name=filename,
        )
    if kind == "application/pdf":
        return Cleaned(clean_name(filename, kind), kind, content, None, hashlib.sha256(content).hexdigest())
    data, mime, thumb = _reencode(filename, content, kind)
    return Cleaned(clean_name(filename, mime), mime, data, thumb, hashlib.sha256(data).hexdigest())


def _reencode(filename: str, content: bytes, kind: str) -> tuple[bytes, str, bytes]:
    try:
        im = Image.open(io.BytesIO(content))
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError):
        if kind == "image/heic":
            raise Invalid(
                "HEIC photos cannot be read on this server. Please send JPEG instead "
                "(on an iPhone: Settings › Camera › Formats › Most Compatible).",
                error_code="file_type_heic",
                name=filename,
            ) from None
        raise Invalid(
            "The photo {name} is damaged or cannot be read.", error_code="file_damaged", name=filename
        ) from None
    if im.width * im.height > MAX_PIXELS:
        raise TooLarge(
            "The photo {name} has more than {max} million pixels.",
            error_code="image_too_large",
            name=filename,
            max=MAX_PIXELS // 1_000_000,
        )
    try:
        im.load()
        upright = ImageOps.exif_transpose(im)  # applies the EXIF orientation to the pixels
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        raise Invalid(
            "The photo {name} is damaged or cannot be read.", error_code="file_damaged", name=filename
        ) from None
    fmt = im.format if im.format in IMAGE_TYPES else "JPEG"  # e.g. a readable HEIC becomes JPEG
    icc = im.info.get("icc_profile")
    upright.info = {}  # nothing of the original's metadata is carried over
    out = io.BytesIO()
    if fmt == "JPEG":
        if upright.mode not in ("RGB", "L", "CMYK"):
            upright = upright.convert("RGB")
        upright.save(out, "JPEG", quality=JPEG_QUALITY, optimize=True, icc_profile=icc)
    elif fmt == "PNG":
        upright.save(out, "PNG", optimize=True, icc_profile=icc)
    else:
        upright.save(out, "WEBP", quality=JPEG_QUALITY, icc_profile=icc)
    return out.getvalue(), IMAGE_TYPES[fmt], thumbnail(upright)


def thumbnail(im: Image.Image) -> bytes:
    """A JPEG at most THUMB_PX on its longer side; transparency is laid on white."""
    t = im.copy()
    t.thumbnail((THUMB_PX, THUMB_PX))
    if t.mode in ("RGBA", "LA", "P", "PA"):
        t = t.convert("RGBA")
        back = Image.new("RGB", t.size, (255, 255, 255))
        back.paste(t, mask=t.getchannel("A"))
        t = back
    elif t.mode != "RGB":
        t = t.convert("RGB")
    out = io.BytesIO()
    t.save(out, "JPEG", quality=80, optimize=True)
    return out.getvalue()


# ---- storage ----------------------------------------------------------------------------------


def storage_root(data_dir: Path | None = None) -> Path:
    return (data_dir if data_dir is not None else get_settings().data_dir) / "attachments"


def blob_path(root: Path, sha256: str) -> Path:
    return root / sha256[:2] / sha256[2:4] / sha256


def thumbnail_path(root: Path, sha256: str) -> Path:
    return blob_path(root, sha256).with_name(f"{sha256}.thumb.jpg")


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temp file beside the target, fsync, rename, fsync the folder: after a crash
    the file is either complete or absent. Content-addressed, so an existing file is kept."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".upload-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


# ---- the service ------------------------------------------------------------------------------


def add_attachments(
    session: Session,
    actor: Actor,
    event: Event,
    files: Sequence[tuple[str, bytes]],
    *,
    data_dir: Path | None = None,
) -> list[Attachment]:
    """Check, clean and store (filename, content) pairs as the event's attachments.

    All files are checked before anything is stored: one refusal refuses the whole upload.
    A file already attached to the event is not added twice (its row is returned). Appends
    one "attach" timeline entry (no state change) and one audit record."""
    if not may_attach(session, actor, event):
        raise PermissionDenied("You cannot add files to event {number} now.", number=event.number)
    if not files:
        raise Invalid("Choose at least one file.", error_code="no_files")
    if len(files) > MAX_FILES:
        raise Invalid("An event can have at most {max} files.", error_code="too_many_files", max=MAX_FILES)
    cleaned = [clean(name, content) for name, content in files]
    existing = {
        a.sha256: a for a in session.scalars(select(Attachment).where(Attachment.event_id == event.id))
    }
    new: dict[str, Cleaned] = {}
    for c in cleaned:
        if c.sha256 not in existing:
            new.setdefault(c.sha256, c)
    if len(existing) + len(new) > MAX_FILES:
        raise Invalid(
            "An event can have at most {max} files; it has {count} already.",
            error_code="too_many_files",
            max=MAX_FILES,
            count=len(existing),
        )
    root = storage_root(data_dir)
    for c in new.values():  # files first: a committed row always has its file
        write_atomic(blob_path(root, c.sha256), c.data)
        if c.thumbnail is not None:
            write_atomic(thumbnail_path(root, c.sha256), c.thumbnail)
    added = [
        Attachment(
            event_id=event.id,
            sha256=c.sha256,
            filename=c.filename,
            mime=c.mime,
            size=len(c.data),
            has_thumbnail=c.thumbnail is not None,
            uploaded_by=actor.user_id or None,
        )
        for c in new.values()
    ]
    if added:
        session.add_all(added)
        session.flush()
        ids = [a.id for a in added]
        entry = service.append_timeline(
            session, event, actor, "attach", event.state, event.state, data={"attachments": ids}
        )
        for a in added:
            a.timeline_seq = entry.seq
        audit.record(
            session,
            actor,
            "event.attach",
            "event",
            event.number,
            extra={"attachments": ids, "sha256": [a.sha256 for a in added], "sizes": [a.size for a in added]},
        )
    by_hash = {**existing, **{a.sha256: a for a in added}}
    return [by_hash[c.sha256] for c in cleaned]


def store(
    session: Session,
    actor: Actor,
    event: Event,
    *,
    filename: str,
    content: bytes,
    data_dir: Path | None = None,
) -> Attachment:
    """One file (the pages' form upload); see add_attachments."""
    return add_attachments(session, actor, event, [(filename, content)], data_dir=data_dir)[0]


def list_for_event(session: Session, event: Event) -> list[Attachment]:
    """The event's attachments, oldest first (the caller has checked the reader may see the event)."""
    return list(
        session.scalars(select(Attachment).where(Attachment.event_id == event.id).order_by(Attachment.id))
    )


def get_attachment(session: Session, actor: Actor, attachment_id: int) -> Attachment:
    """An attachment of an event the reader may see; anything else is "not found"."""
    att = session.get(Attachment, attachment_id)
    visible = (
        att is not None
        and session.scalar(
            service.visible_stmt(actor).where(Event.id == att.event_id).with_only_columns(Event.id)
        )
        is not None
    )
    if att is None or not visible:
        raise NotFound("No file with id {id}.", id=attachment_id)
    return att


def file_of(attachment: Attachment, *, data_dir: Path | None = None, thumb: bool = False) -> Path:
    root = storage_root(data_dir)
    if thumb and not attachment.has_thumbnail:
        raise NotFound("The file {id} has no thumbnail.", id=attachment.id)
    path = thumbnail_path(root, attachment.sha256) if thumb else blob_path(root, attachment.sha256)
    if not path.is_file():
        raise NotFound("The stored file {id} is missing; tell the administrator.", id=attachment.id)
    return path
