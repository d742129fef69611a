"""The 人民调解协议书 (people's mediation agreement) as a PDF, in the standard layout: number,
parties, facts and matters in dispute, terms, performance, effect, signatures and seal.

The document is Chinese whatever the reader's UI language (it is the legal text the parties
sign). It is rendered with reportlab's `invariant` mode, so the same agreement gives the same
bytes: the seal hook checks a sealed document against the current agreement by its SHA-256.
"""

from __future__ import annotations

import io
from datetime import date
from decimal import Decimal
from typing import Any
from xml.sax.saxutils import escape

from reportlab.lib.enums import TA_CENTER, TA_RIGHT
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle
from sqlalchemy.orm import Session

from civicgrid.accounts.models import Org, User
from civicgrid.core.calendar import default_calendar
from civicgrid.core.pdf import cjk_font, styles
from civicgrid.disputes.models import Dispute, Outcome, Party, PartyKind, PartyRole

ROLE_ZH = {PartyRole.applicant: "申请人", PartyRole.respondent: "被申请人", PartyRole.third_party: "第三人"}


def _zh_date(d: date | None) -> str:
    return f"{d.year}年{d.month}月{d.day}日" if d else "____年__月__日"


def _p(text: str, style: ParagraphStyle) -> Paragraph:
    return Paragraph(escape(text).replace("\n", "<br/>"), style)


def _party_line(p: Party) -> str:
    parts = [f"{ROLE_ZH[p.role]}：{p.name}"]
    if p.kind == PartyKind.org:
        if p.id_number:
            parts.append(f"统一社会信用代码：{p.id_number}")
        if p.representative:
            parts.append(f"法定代表人：{p.representative}")
    elif p.id_number:
        parts.append(f"公民身份号码：{p.id_number}")
    if p.address:
        parts.append(f"住所：{p.address}")
    if p.phone:
        parts.append(f"联系电话：{p.phone}")
    return "，".join(parts) + "。"


def render_agreement(session: Session, d: Dispute) -> bytes:
    base = styles()
    font = cjk_font()
    body = ParagraphStyle("cg-body", parent=base["Normal"], fontName=font, fontSize=12, leading=20)
    head = ParagraphStyle("cg-head", parent=body, fontSize=13, leading=22, spaceBefore=8)
    title = ParagraphStyle("cg-title", parent=body, fontSize=20, leading=30, alignment=TA_CENTER)
    right = ParagraphStyle("cg-right", parent=body, alignment=TA_RIGHT)
    org = session.get(Org, d.handling_org_id)
    mediator = session.get(User, d.lead_mediator_id) if d.lead_mediator_id else None
    agreed_on = d.agreed_at.astimezone(default_calendar().tz).date() if d.agreed_at else None
    copies = len(d.parties) + 1

    story: list[Any] = [
        _p("人民调解协议书", title),
        Spacer(1, 4 * mm),
        _p(f"编号：{d.number}", right),
        _p("当事人：", head),
        *[_p(_party_line(p), body) for p in d.parties],
        _p("纠纷主要事实、争议事项：", head),
        _p(d.agreement_facts, body),
        *(
            [_p(f"争议金额：{Decimal(d.amount_cents) / 100:,.2f}元。", body)]
            if d.amount_cents is not None
            else []
        ),
        _p(
            "经调解，当事人自愿达成如下协议："
            + (
                "（部分达成，未达成部分当事人可依法另行解决）"
                if d.outcome == Outcome.agreement_partial
                else ""
            ),
            head,
        ),
        _p(d.agreement_terms, body),
        _p("履行方式、时限：", head),
        _p(
            f"当事人应于{_zh_date(d.performance_deadline)}前履行完毕本协议约定的义务。"
            if d.performance_deadline
            else "当事人应按本协议约定的方式履行。",
            body,
        ),
        _p(
            "本协议自各方当事人签名（盖章）、人民调解员签名并加盖调解组织印章之日起生效。"
            f"本协议一式{copies}份，当事人、调解组织各持一份。",
            body,
        ),
        Spacer(1, 8 * mm),
        _p("当事人签名（盖章）：", head),
    ]
    rows = [[f"{ROLE_ZH[p.role]}：{p.name}", "签名：____________", "日期：____年__月__日"] for p in d.parties]
    table = Table(rows, colWidths=[60 * mm, 55 * mm, 50 * mm])
    table.setStyle(
        TableStyle(
            [
                ("FONTNAME", (0, 0), (-1, -1), font),
                ("FONTSIZE", (0, 0), (-1, -1), 11),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 8),
            ]
        )
    )
    story += [
        table,
        Spacer(1, 6 * mm),
        _p(f"人民调解员：{mediator.display_name if mediator else ''}　　签名：____________", body),
        Spacer(1, 6 * mm),
        _p(f"调解组织：{org.name if org else ''}（印章）", right),
        _p(_zh_date(agreed_on), right),
    ]
    out = io.BytesIO()
    doc = SimpleDocTemplate(
        out,
        pagesize=A4,
        leftMargin=22 * mm,
        rightMargin=22 * mm,
        topMargin=20 * mm,
        bottomMargin=20 * mm,
        title=f"人民调解协议书 {d.number}",
        author=org.name if org else "",
        invariant=1,
    )
    doc.build(story)
    return out.getvalue()
