"""Photos and files of events over HTTP: cleaning, storage, limits and who may see them."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

from PIL import Image
from PIL.ExifTags import GPS, IFD
from sqlalchemy import select

from civicgrid.core.audit import AuditRecord
from civicgrid.events import attachments
from civicgrid.events.models import Attachment, TimelineEntry
from tests.factories import login_headers

REPORT = {"category": "0102", "lon": 2.5, "lat": 2.5, "description": "小区门口有暴露垃圾"}


def photo_with_gps(width: int = 800, height: int = 600, colour=(200, 30, 30)) -> bytes:
    """A JPEG as a phone takes it: location, camera make, and 'rotate 90°' orientation."""
    exif = Image.Exif()
    exif[0x010F] = "Apple"
    exif[0x0112] = 6
    gps = exif.get_ifd(IFD.GPSInfo)
    gps[GPS.GPSLatitudeRef] = "N"
    gps[GPS.GPSLatitude] = (28.0, 40.0, 12.5)
    gps[GPS.GPSLongitudeRef] = "E"
    gps[GPS.GPSLongitude] = (121.0, 25.0, 3.0)
    buf = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buf, "JPEG", exif=exif)
    data = buf.getvalue()
    assert Image.open(io.BytesIO(data)).getexif().get_ifd(IFD.GPSInfo)  # the input does carry GPS
    return data


def png(i: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (i * 20 % 256, 10, 10)).save(buf, "PNG")
    return buf.getvalue()


def report(client, who="resident") -> str:
    res = client.post("/api/v1/events", headers=login_headers(client, who), json=REPORT)
    assert res.status_code == 201, res.text
    return str(res.json()["number"])


def upload(client, headers, number, *files: tuple[str, bytes, str]):
    return client.post(
        f"/api/v1/events/{number}/attachments",
        headers=headers,
        files=[("files", (name, data, ctype)) for name, data, ctype in files],
    )


def stored_files(settings) -> list[Path]:
    root = Path(settings.data_dir) / "attachments"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_resident_photo_loses_its_location_keeps_its_orientation_and_gets_a_thumbnail(
    client, world, settings
):
    number = report(client)
    resident = login_headers(client, "resident")
    res = upload(client, resident, number, ("IMG_0001.HEIC.jpg", photo_with_gps(), "image/jpeg"))
    assert res.status_code == 201, res.text
    [a] = res.json()
    assert a["mime"] == "image/jpeg" and a["thumbnail_url"]

    path = Path(settings.data_dir) / "attachments" / a["sha256"][:2] / a["sha256"][2:4] / a["sha256"]
    data = path.read_bytes()
    assert hashlib.sha256(data).hexdigest() == a["sha256"]  # the hash is of the cleaned file
    kept = Image.open(io.BytesIO(data))
    assert not kept.getexif().get_ifd(IFD.GPSInfo) and dict(kept.getexif()) == {}
    assert kept.size == (600, 800)  # the orientation was applied to the pixels

    got = client.get(a["url"], headers=resident)
    assert got.status_code == 200 and got.content == data
    assert got.headers["content-type"] == "image/jpeg"
    assert got.headers["x-content-type-options"] == "nosniff"
    assert (
        got.headers["content-disposition"].startswith("inline")
        and "IMG_0001.HEIC.jpg" in got.headers["content-disposition"]
    )
    thumb = client.get(a["thumbnail_url"], headers=resident)
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    small = Image.open(io.BytesIO(thumb.content))
    assert max(small.size) == attachments.THUMB_PX and len(thumb.content) < 20_000

    listing = client.get(f"/api/v1/events/{number}/attachments", headers=resident).json()
    assert [x["id"] for x in listing] == [a["id"]]
    event = client.get(f"/api/v1/events/{number}", headers=resident).json()
    assert event["state"] == "reported"  # attaching is not a step of the workflow
    last = event["timeline"][-1]
    assert last["action"] == "attach"
    with world.db.session() as s:
        entry = s.scalars(select(TimelineEntry).where(TimelineEntry.action == "attach")).one()
        assert json.loads(entry.data) == {"attachments": [a["id"]]}
        assert s.get(Attachment, a["id"]).timeline_seq == entry.seq
        assert (
            s.scalars(select(AuditRecord).where(AuditRecord.action == "event.attach")).one().target_id
            == number
        )


def test_identical_content_is_stored_once(client, world, settings):
    first, second = report(client), report(client, "resident2")
    photo = photo_with_gps()
    resident = login_headers(client, "resident")
    res = upload(client, resident, first, ("a.jpg", photo, "image/jpeg"), ("b.jpg", photo, "image/jpeg"))
    assert res.status_code == 201 and len({a["id"] for a in res.json()}) == 1
    again = upload(client, resident, first, ("c.jpg", photo, "image/jpeg")).json()
    assert again[0]["id"] == res.json()[0]["id"]  # already attached: not added twice
    other = upload(client, login_headers(client, "resident2"), second, ("d.jpg", photo, "image/jpeg")).json()
    assert other[0]["sha256"] == again[0]["sha256"] and other[0]["id"] != again[0]["id"]
    assert len(stored_files(settings)) == 2  # one photo and its thumbnail
    with world.db.session() as s:
        assert len(s.scalars(select(Attachment)).all()) == 2


def test_wrong_type_too_big_and_too_many_are_refused_and_store_nothing(client, world, settings):
    number = report(client)
    resident = login_headers(client, "resident")
    text_as_jpeg = ("photo.jpg", "这不是照片".encode(), "image/jpeg")
    res = upload(client, resident, number, ("ok.png", png(1), "image/png"), text_as_jpeg)
    assert res.status_code == 422 and res.json()["error"]["code"] == "file_type"
    assert "不是照片" in res.json()["error"]["message"] and "photo.jpg" in res.json()["error"]["message"]

    big = b"\xff\xd8\xff" + b"\0" * attachments.MAX_BYTES
    res = upload(client, resident, number, ("big.jpg", big, "image/jpeg"))
    assert res.status_code == 413 and "超过 10 MB" in res.json()["error"]["message"]

    heic = b"\0\0\0\x18ftypheic\0\0\0\0mif1heic" + b"\0" * 100
    res = upload(client, resident, number, ("IMG_2.HEIC", heic, "image/heic"))
    assert res.status_code == 422 and "HEIC" in res.json()["error"]["message"]

    res = upload(client, resident, number, *[(f"{i}.png", png(i), "image/png") for i in range(10)])
    assert res.status_code == 422 and "最多 9 个" in res.json()["error"]["message"]
    assert stored_files(settings) == []
    assert client.get(f"/api/v1/events/{number}/attachments", headers=resident).json() == []

    assert (
        upload(client, resident, number, *[(f"{i}.png", png(i), "image/png") for i in range(8)]).status_code
        == 201
    )
    res = upload(client, resident, number, ("9.png", png(9), "image/png"), ("10.png", png(10), "image/png"))
    assert res.status_code == 422 and "已有 8 个" in res.json()["error"]["message"]
    assert len(client.get(f"/api/v1/events/{number}/attachments", headers=resident).json()) == 8

    en = {**resident, "Accept-Language": "en"}
    res = upload(client, en, number, text_as_jpeg)
    assert res.json()["error"]["message"].startswith("The file photo.jpg is not a photo")


def test_pdf_is_downloaded_not_shown_and_has_no_thumbnail(client, world):
    number = report(client)
    resident = login_headers(client, "resident")
    pdf = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
    [a] = upload(client, resident, number, ("../../etc/报告.pdf", pdf, "text/html")).json()
    assert a["mime"] == "application/pdf" and a["filename"] == "报告.pdf" and a["thumbnail_url"] is None
    got = client.get(a["url"], headers=resident)
    assert got.headers["content-type"] == "application/pdf" and got.content == pdf
    assert got.headers["content-disposition"].startswith("attachment")
    assert client.get(a["url"] + "/thumbnail", headers=resident).status_code == 404


def test_only_readers_of_the_event_see_its_files_and_only_its_people_add_them(client, world):
    number = report(client)
    resident = login_headers(client, "resident")
    [a] = upload(client, resident, number, ("p.jpg", photo_with_gps(), "image/jpeg")).json()
    for who in ("dispatcher2", "resident2"):  # county 2's dispatcher; another resident
        h = login_headers(client, who)
        assert client.get(a["url"], headers=h).status_code == 404
        assert client.get(a["thumbnail_url"], headers=h).status_code == 404
        assert client.get(f"/api/v1/events/{number}/attachments", headers=h).status_code == 404
        assert upload(client, h, number, ("x.png", png(1), "image/png")).status_code == 404
    assert client.get("/api/v1/attachments/99999", headers=resident).status_code == 404
    for who in ("dispatcher", "grid_worker", "handler", "leader"):
        assert client.get(a["url"], headers=login_headers(client, who)).status_code == 200

    handler = login_headers(client, "handler")
    res = upload(client, handler, number, ("x.png", png(2), "image/png"))
    assert res.status_code == 403  # not (yet) the lead department
    dispatcher = login_headers(client, "dispatcher")
    assert upload(client, dispatcher, number, ("d.png", png(3), "image/png")).status_code == 201
    assert (
        upload(
            client, login_headers(client, "grid_worker"), number, ("g.png", png(4), "image/png")
        ).status_code
        == 201
    )
    client.post(f"/api/v1/events/{number}/accept", headers=dispatcher, json={})
    client.post(f"/api/v1/events/{number}/dispatch", headers=dispatcher, json={})
    assert upload(client, handler, number, ("result.png", png(5), "image/png")).status_code == 201
    assert len(client.get(f"/api/v1/events/{number}/attachments", headers=resident).json()) == 4
