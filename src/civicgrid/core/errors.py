"""Errors a person can act on: each carries an English msgid, translated when it is rendered."""

from __future__ import annotations

from typing import Any

from civicgrid.core.i18n import gettext


class AppError(Exception):
    status = 400
    code = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        error_code: str | None = None,
        details: list[dict[str, Any]] | None = None,
        **params: Any,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.params = params
        # Per-item problems (e.g. one per bad GeoJSON feature or CSV row), each with a "message".
        self.details = details or []
        if error_code:
            self.code = error_code

    def translated(self) -> str:
        return gettext(self.message, **self.params)


class Invalid(AppError):
    status = 422
    code = "invalid"


class NotFound(AppError):
    status = 404
    code = "not_found"


class Unauthenticated(AppError):
    status = 401
    code = "unauthenticated"


class PermissionDenied(AppError):
    status = 403
    code = "forbidden"


class Conflict(AppError):
    status = 409
    code = "conflict"


class TooManyRequests(AppError):
    status = 429
    code = "too_many_requests"

    def __init__(self, message: str, *, retry_after: int, **params: Any) -> None:
        super().__init__(message, retry_after=retry_after, **params)
        self.retry_after = retry_after


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **extra}}
