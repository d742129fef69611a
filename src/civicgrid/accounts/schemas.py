"""Pydantic shapes of the accounts API."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from civicgrid.accounts.models import OrgKind
from civicgrid.accounts.permissions import Role
from civicgrid.core.vocab import Platform


class OrgIn(BaseModel):
    code: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    name: str = Field(min_length=1, max_length=200)
    name_en: str = Field(default="", max_length=200)
    kind: OrgKind
    region_code: str
    platform: Platform | None = None


class OrgOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    code: str
    name: str
    name_en: str
    kind: OrgKind
    region_id: int
    platform: Platform | None
    active: bool


class MembershipIn(BaseModel):
    org_code: str
    role: Role


class MembershipOut(BaseModel):
    id: int
    org_id: int
    org_code: str
    org_name: str
    role: Role


class UserIn(BaseModel):
    username: str = Field(min_length=2, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")
    display_name: str = Field(min_length=1, max_length=100)
    phone: str | None = Field(default=None, max_length=32)
    password: str = Field(min_length=8, max_length=256)
    memberships: list[MembershipIn] = Field(min_length=1)


class UserUpdate(BaseModel):
    display_name: str | None = Field(default=None, min_length=1, max_length=100)
    phone: str | None = Field(default=None, max_length=32)
    active: bool | None = None
    password: str | None = Field(default=None, min_length=8, max_length=256)


class UserOut(BaseModel):
    id: int
    username: str
    display_name: str
    phone: str | None  # masked unless the reader may manage users
    active: bool
    memberships: list[MembershipOut]


class TokenIn(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    days: int = Field(default=90, ge=1, le=366)


class LoginIn(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=256)
    name: str = Field(default="api", max_length=100)
    days: int = Field(default=30, ge=1, le=366)


class TokenOut(BaseModel):
    id: int
    name: str
    prefix: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None


class TokenCreated(TokenOut):
    token: str  # shown once, never stored in clear


class MeOut(BaseModel):
    user_id: int
    username: str
    display_name: str
    org_id: int
    org_name: str
    role: str
    region_id: int
    permissions: list[str]


class AuditOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    at: datetime
    actor: str
    org_id: int | None
    action: str
    target_type: str
    target_id: str
    diff: str
    hash: str


class AuditPage(BaseModel):
    items: list[AuditOut]
    total: int
    page: int
    size: int


class AuditVerifyOut(BaseModel):
    intact: bool
    breaks: list[dict[str, object]]
