"""Translations: English msgids in code and templates, Simplified Chinese catalogues as data.

Every package keeps its strings in `civicgrid/locale/<locale>/<package>.po`; all files of a
locale are merged at start-up, so modules add strings without touching each other's files.
English is the msgid itself.
"""

from __future__ import annotations

import contextvars
from functools import lru_cache
from pathlib import Path
from typing import Any

from babel.messages.pofile import read_po

LOCALES = ("zh_Hans", "en")
DEFAULT_LOCALE = "zh_Hans"
LOCALE_DIR = Path(__file__).resolve().parent.parent / "locale"

_current: contextvars.ContextVar[str] = contextvars.ContextVar("locale", default=DEFAULT_LOCALE)


@lru_cache
def catalogue(locale: str) -> dict[str, tuple[str, ...]]:
    """msgid → translated forms, merged from every .po file of the locale."""
    out: dict[str, tuple[str, ...]] = {}
    folder = LOCALE_DIR / locale
    if not folder.is_dir():
        return out
    for po in sorted(folder.glob("*.po")):
        with po.open("rb") as fp:
            cat = read_po(fp, locale="zh_Hans_CN" if locale == "zh_Hans" else locale)
        for msg in cat:
            if not msg.id or msg.fuzzy:
                continue
            key = str(msg.id[0] if isinstance(msg.id, tuple | list) else msg.id)
            raw = msg.string if isinstance(msg.string, tuple | list) else (msg.string,)
            forms = tuple(str(f or "") for f in raw)
            if any(forms):
                out[key] = forms
    return out


def get_locale() -> str:
    return _current.get()


def set_locale(locale: str) -> contextvars.Token[str]:
    return _current.set(locale if locale in LOCALES else DEFAULT_LOCALE)


def reset_locale(token: contextvars.Token[str]) -> None:
    _current.reset(token)


def gettext(message: str, **params: Any) -> str:
    forms = catalogue(get_locale()).get(message)
    text = forms[0] if forms and forms[0] else message
    return text.format(**params) if params else text


def ngettext(singular: str, plural: str, n: int, **params: Any) -> str:
    forms = catalogue(get_locale()).get(singular)
    # Chinese has one plural form.
    text = forms[0] if forms and forms[0] else (singular if n == 1 else plural)
    params.setdefault("num", n)
    return text.format(**params)


_ = gettext


def negotiate_locale(requested: str | None, accept_language: str | None) -> str:
    """An explicit choice (cookie or ?lang=) wins; then Accept-Language; then Chinese."""
    if requested:
        norm = normalise(requested)
        if norm:
            return norm
    if accept_language:
        weighted: list[tuple[float, str]] = []
        for part in accept_language.split(","):
            lang, _sep, q = part.strip().partition(";q=")
            try:
                weight = float(q) if q else 1.0
            except ValueError:
                weight = 0.0
            norm = normalise(lang)
            if norm:
                weighted.append((weight, norm))
        if weighted:
            return max(weighted, key=lambda w: w[0])[1]
    return DEFAULT_LOCALE


def normalise(tag: str) -> str | None:
    t = tag.strip().lower().replace("_", "-")
    if t.startswith("zh"):
        return "zh_Hans"
    if t.startswith("en"):
        return "en"
    return None
