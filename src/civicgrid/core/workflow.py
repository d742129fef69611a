"""State-machine plumbing shared by the case workflows (events, disputes): which step may start
from which state, the parameters each step takes, which steps a reader is offered, and the
append-only timeline every step writes. The rules of each workflow stay in its own package
(`events/actions.py`, `disputes/service.py`); only the mechanism lives here.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import ForeignKey, Integer, String, Text, func, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from civicgrid.core.auth import Actor
from civicgrid.core.db import utcnow
from civicgrid.core.errors import Invalid, NotFound

StateT = TypeVar("StateT")

# action → (required parameters, optional parameters)
Params = Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]]


class Workflow(Generic[StateT]):
    """The legal moves of one state machine: `allowed_from` (action → states it may start from,
    the single source of truth that tests read) and `params` (what each action takes)."""

    def __init__(self, allowed_from: Mapping[str, tuple[StateT, ...]], params: Params) -> None:
        self.allowed_from = allowed_from
        self.params = params

    def allows(self, state: StateT, action: str) -> bool:
        return state in self.allowed_from.get(action, ())

    def check(self, state: StateT, action: str, illegal: Callable[[], Exception]) -> None:
        """Raise `illegal()` unless `action` may start from `state`."""
        if not self.allows(state, action):
            raise illegal()

    def params_for(
        self, action: str, given: Mapping[str, Any], label: Callable[[str], str] = str
    ) -> dict[str, Any]:
        """The keyword arguments of a step from a request body; a missing one is a clear 422
        naming the field (`label` turns the parameter name into the reader's words)."""
        if action not in self.params:
            raise NotFound("Unknown step {action}.", action=action)
        required, optional = self.params[action]
        out = {}
        for name in required:
            if given.get(name) is None:
                raise Invalid("{what} is required.", what=label(name), field=name)
            out[name] = given[name]
        for name in optional:
            if given.get(name) is not None:
                out[name] = given[name]
        return out

    def offered(self, state: StateT, may: Callable[[str], bool]) -> list[str]:
        """The actions that may start from `state` and that `may` lets this reader take, in
        the order of `allowed_from` (buttons and the API's `actions`)."""
        return [a for a, states in self.allowed_from.items() if state in states and may(a)]


def required_text(text: str | None, label: str, field: str) -> str:
    """A free-text parameter that must not be blank (reasons, minutes, receiving bodies)."""
    text = (text or "").strip()
    if not text:
        raise Invalid("{what} is required.", what=label, field=field)
    return text


class TimelineColumns:
    """Columns of an append-only timeline table: one immutable row per step of a case, numbered
    per case (`seq`). The migration adds triggers that refuse UPDATE and DELETE on both backends,
    as for `event_timeline`. A table using this mixin adds its own case foreign key."""

    id: Mapped[int] = mapped_column(primary_key=True)
    seq: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    actor_user_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))
    actor: Mapped[str] = mapped_column(String(64))
    org_id: Mapped[int | None] = mapped_column(ForeignKey("org.id"))
    action: Mapped[str] = mapped_column(String(32))
    from_state: Mapped[str | None] = mapped_column(String(16))
    to_state: Mapped[str] = mapped_column(String(16))
    note: Mapped[str] = mapped_column(Text, default="")
    data: Mapped[str] = mapped_column(Text, default="{}")


EntryT = TypeVar("EntryT", bound=TimelineColumns)


def append_entry(
    session: Session,
    model: type[EntryT],
    case_column: str,
    case_id: int,
    actor: Actor,
    action: str,
    from_state: Any,
    to_state: Any,
    *,
    note: str = "",
    data: dict[str, Any] | None = None,
) -> EntryT:
    """Append the next entry of a case's timeline (seq = last + 1; the unique (case, seq)
    constraint turns a concurrent append into a conflict instead of a silent duplicate)."""
    col = getattr(model, case_column)
    last = session.scalar(select(func.max(model.seq)).where(col == case_id)) or 0
    values = {
        case_column: case_id,
        "seq": last + 1,
        "actor_user_id": actor.user_id or None,
        "actor": actor.username,
        "org_id": actor.org_id or None,
        "action": action,
        "from_state": str(from_state) if from_state is not None else None,
        "to_state": str(to_state),
        "note": note,
        "data": json.dumps(data or {}, ensure_ascii=False, default=str),
    }
    entry = model(**values)
    session.add(entry)
    session.flush()
    return entry
