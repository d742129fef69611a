import pytest

from civicgrid.core.i18n import gettext, negotiate_locale, reset_locale, set_locale


@pytest.mark.parametrize(
    "explicit,header,expected",
    [
        (None, None, "zh_Hans"),
        (None, "en-US,en;q=0.9", "en"),
        (None, "fr-FR, en;q=0.5, zh-CN;q=0.8", "zh_Hans"),
        (None, "fr-FR", "zh_Hans"),
        ("en", "zh-CN", "en"),
        ("zh", "en", "zh_Hans"),
        ("klingon", "en", "en"),
        (None, "en;q=abc, zh;q=0.1", "zh_Hans"),
    ],
)
def test_negotiate_locale(explicit, header, expected):
    assert negotiate_locale(explicit, header) == expected


def test_gettext_translates_and_formats_in_current_locale():
    token = set_locale("zh_Hans")
    try:
        assert gettext("The username {username} is taken.", username="li") == "用户名 li 已被占用。"
    finally:
        reset_locale(token)
    token = set_locale("en")
    try:
        assert gettext("The username {username} is taken.", username="li") == "The username li is taken."
    finally:
        reset_locale(token)
