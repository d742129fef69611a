"""Every user-facing string has a Simplified Chinese translation, and pages speak the right language.

The msgids are extracted the way a translator's tool would: Babel's Jinja2 extractor over every
package's templates, Babel's Python extractor over all code (_, gettext, ngettext, N_), and the first
argument of every AppError subclass raised in code (they are translated when rendered).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_file

import civicgrid
from civicgrid.accounts.permissions import ROLE_LABELS
from civicgrid.core.i18n import catalogue
from civicgrid.core.vocab import PLATFORM_LABELS
from tests.web.conftest import login

SRC = Path(civicgrid.__file__).resolve().parent
KEYWORDS = {"_": None, "gettext": None, "ngettext": (1, 2), "N_": None}
ERRORS = {
    "AppError",
    "Invalid",
    "NotFound",
    "Conflict",
    "PermissionDenied",
    "Unauthenticated",
    "TooManyRequests",
}


def _where(path: Path, line: int) -> str:
    return f"{path.relative_to(SRC)}:{line}"


def template_msgids() -> dict[str, str]:
    found: dict[str, str] = {}
    for path in sorted(SRC.glob("*/templates/**/*.html")):
        for line, msg, _comments, _ctx in extract_from_file(
            "jinja2.ext.babel_extract",
            str(path),
            keywords=KEYWORDS,
            options={"trim_blocks": "true", "lstrip_blocks": "true"},
        ):
            for m in msg if isinstance(msg, tuple) else (msg,):
                if m:
                    found.setdefault(m, _where(path, line))
                    break  # the singular is the catalogue key
    return found


def python_msgids() -> dict[str, str]:
    found: dict[str, str] = {}
    for path in sorted(SRC.rglob("*.py")):
        if "migrations" in path.parts:
            continue
        for line, msg, _comments, _ctx in extract_from_file("python", str(path), keywords=KEYWORDS):
            first = msg[0] if isinstance(msg, tuple) else msg
            if first:
                found.setdefault(first, _where(path, line))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
            arg = node.args[0]
            if name in ERRORS and isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                found.setdefault(arg.value, _where(path, node.lineno))
    return found


def label_msgids() -> dict[str, str]:
    """Labels kept in tables and translated where they are shown."""
    labels = {str(v): "accounts/permissions.py:ROLE_LABELS" for v in ROLE_LABELS.values()}
    labels.update({str(v): "core/vocab.py:PLATFORM_LABELS" for v in PLATFORM_LABELS.values()})
    return labels


def test_extraction_finds_the_shell_strings():
    ids = template_msgids()
    assert "Wrong username or password." in python_msgids()
    assert "Log out" in ids and "Grid map" in ids


def test_every_msgid_has_a_chinese_translation():
    zh = catalogue("zh_Hans")
    wanted = {**label_msgids(), **python_msgids(), **template_msgids()}
    missing = sorted((where, msgid) for msgid, where in wanted.items() if msgid not in zh)
    assert not missing, f"{len(missing)} msgids without a zh_Hans translation:\n" + "\n".join(
        f"  {where}: {msgid!r}" for where, msgid in missing
    )


def test_translations_keep_their_placeholders():
    """A translation must use the same {name} / %(name)s placeholders as its msgid."""
    import re

    pattern = re.compile(r"\{[a-z_]+\}|%\([a-z_]+\)s")
    zh = catalogue("zh_Hans")
    bad = [
        msgid
        for msgid, forms in zh.items()
        if any(sorted(pattern.findall(f)) != sorted(pattern.findall(msgid)) for f in forms if f)
    ]
    assert not bad, bad


PAGES = ["/login", "/", "/regions/map", "/admin/users", "/admin/orgs", "/admin/audit", "/account"]


@pytest.mark.parametrize("path", PAGES)
def test_pages_are_chinese_by_default_and_english_on_request(client, tree, path):
    if path != "/login":
        login(client, "admin")
    zh = client.get(path)
    assert zh.status_code == 200
    assert ('<html lang="zh-Hans">' in zh.text and "退出" in zh.text) or path == "/login"
    assert "中文" in zh.text
    en = client.get(path, headers={"Accept-Language": "en-GB,en;q=0.9"})
    assert '<html lang="en">' in en.text
    by_query = client.get(path + "?lang=en")
    assert '<html lang="en">' in by_query.text
    client.cookies.delete("lang")


def test_accept_language_chinese_and_default(client, tree):
    assert '<html lang="zh-Hans">' in client.get("/login", headers={"Accept-Language": "zh-CN"}).text
    assert '<html lang="zh-Hans">' in client.get("/login", headers={"Accept-Language": "fr"}).text
    assert "Log in" in client.get("/login", headers={"Accept-Language": "en"}).text
    assert "登录" in client.get("/login").text


def test_every_html_response_declares_utf8(client, tree):
    responses = [client.get("/login"), client.get("/nope", headers={"Accept": "text/html"})]
    login(client, "admin")
    responses += [client.get(p) for p in PAGES[1:]]
    responses.append(client.get("/regions/331001001001001/panel", headers={"HX-Request": "true"}))
    for res in responses:
        assert res.headers["content-type"].lower().replace(" ", "") == "text/html;charset=utf-8", res.url
        if "<html" in res.text:
            assert '<meta charset="utf-8">' in res.text
