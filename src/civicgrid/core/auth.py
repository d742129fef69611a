"""Who is acting: the user, the org they act for, their role, permissions and data scope."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Actor:
    user_id: int
    username: str
    display_name: str
    membership_id: int
    org_id: int
    org_name: str
    role: str
    region_id: int
    region_path: str  # materialised path of the org's region; the data scope is its subtree
    permissions: frozenset[str] = field(default_factory=frozenset)
    via: str = "session"  # "session", "token" or "system"
    csrf_token: str = ""

    def can(self, permission: Any) -> bool:
        return str(permission) in self.permissions

    def in_scope(self, path: str) -> bool:
        """True when a region with this materialised path lies inside the actor's subtree."""
        return path.startswith(self.region_path)


SYSTEM = Actor(
    user_id=0,
    username="system",
    display_name="system",
    membership_id=0,
    org_id=0,
    org_name="",
    role="system",
    region_id=0,
    region_path="/",
    via="system",
)
