"""PDF documents with Chinese text (reportlab): one place that finds a CJK font, so meeting
reports, mediation agreements and certificates all render Chinese as text, not empty boxes.

A TrueType CJK font from the system (fonts-wqy-microhei or Noto CJK, installed by
scripts/system-deps.sh) is embedded when present, so the PDF looks the same everywhere;
otherwise reportlab's built-in STSong-Light CID font is referenced (readers supply the glyphs).
Text stays extractable either way, which the tests rely on.
"""

from __future__ import annotations

import functools
from pathlib import Path

from reportlab.lib.styles import ParagraphStyle, StyleSheet1, getSampleStyleSheet
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.cidfonts import UnicodeCIDFont
from reportlab.pdfbase.ttfonts import TTFont

FONT_CANDIDATES = (
    ("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc", 0),
    ("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc", 2),  # index 2: Simplified Chinese
    ("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc", 0),
)


@functools.cache
def cjk_font() -> str:
    """The registered name of the CJK font to draw with."""
    for path, index in FONT_CANDIDATES:
        if Path(path).exists():
            try:
                pdfmetrics.registerFont(TTFont("CivicGridCJK", path, subfontIndex=index))
                return "CivicGridCJK"
            except Exception:  # a font reportlab cannot embed (CFF outlines): try the next
                continue
    pdfmetrics.registerFont(UnicodeCIDFont("STSong-Light"))
    return "STSong-Light"


@functools.cache
def styles() -> StyleSheet1:
    """reportlab's sample styles switched to the CJK font, with CJK line wrapping."""
    font = cjk_font()
    sheet = getSampleStyleSheet()
    for name in list(sheet.byName):
        style = sheet[name]
        if isinstance(style, ParagraphStyle):
            style.fontName = font
            style.wordWrap = "CJK"
    return sheet
