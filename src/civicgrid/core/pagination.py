"""Offset pagination shared by every list endpoint and page."""

from __future__ import annotations

from typing import Annotated, Any, Generic, TypeVar

from fastapi import Depends, Query
from pydantic import BaseModel
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

T = TypeVar("T")
MAX_SIZE = 500


class PageParams(BaseModel):
    page: int = 1
    size: int = 50


def page_params(
    page: Annotated[int, Query(ge=1)] = 1, size: Annotated[int, Query(ge=1, le=MAX_SIZE)] = 50
) -> PageParams:
    return PageParams(page=page, size=size)


PageDep = Annotated[PageParams, Depends(page_params)]


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    page: int
    size: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.size))


def paginate(session: Session, stmt: Select[Any], params: PageParams) -> tuple[list[Any], int]:
    """Rows of one page and the total count of the unpaged statement."""
    total = session.scalar(select(func.count()).select_from(stmt.order_by(None).subquery())) or 0
    rows = session.scalars(stmt.limit(params.size).offset((params.page - 1) * params.size)).all()
    return list(rows), total
