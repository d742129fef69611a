"""Masking of personal data (身份证号, phone numbers, names) for readers without the right."""

from __future__ import annotations

import re
from typing import Any

# Keys whose values are personal wherever they appear (audit diffs, exports, logs).
PERSONAL_KEYS = {"phone", "mobile", "id_number", "id_card", "display_name", "name_person", "address_person"}
SECRET_KEYS = {"password", "password_hash", "token", "token_hash", "csrf_token", "secret"}

_ID_RE = re.compile(r"^\d{17}[\dXx]$")
_MOBILE_RE = re.compile(r"^1\d{10}$")


def mask_id_number(v: str) -> str:
    """110101199003071234 → 110101********1234."""
    return v[:6] + "*" * (len(v) - 10) + v[-4:] if len(v) > 10 else "*" * len(v)


def mask_phone(v: str) -> str:
    """13812345678 → 138****5678; other numbers keep only their last four digits."""
    if _MOBILE_RE.match(v):
        return v[:3] + "****" + v[-4:]
    return "*" * max(len(v) - 4, 0) + v[-4:]


def mask_name(v: str) -> str:
    """张三 → 张*; 欧阳娜娜 → 欧***; Latin names keep their first letter."""
    return v[:1] + "*" * (len(v) - 1) if v else v


def mask_value(kind: str, value: Any) -> Any:
    if value is None or value == "":
        return value
    s = str(value)
    if kind in ("id_number", "id_card"):
        return mask_id_number(s)
    if kind in ("phone", "mobile"):
        return mask_phone(s)
    if kind in ("display_name", "name", "name_person"):
        return mask_name(s)
    if _ID_RE.match(s):
        return mask_id_number(s)
    return mask_name(s)


def mask_record(data: dict[str, Any]) -> dict[str, Any]:
    """A copy of `data` with personal keys masked and secrets removed (for audit and logs)."""
    out: dict[str, Any] = {}
    for k, v in data.items():
        if k in SECRET_KEYS:
            out[k] = "[secret]"
        elif k in PERSONAL_KEYS:
            out[k] = mask_value(k, v)
        else:
            out[k] = v
    return out
