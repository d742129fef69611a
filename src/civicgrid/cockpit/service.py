"""The cockpit's rules: which region a reader may look at, the context of a request, and one
computation per panel, scope and interval shared by every screen that shows it.

Panels are computed through `PanelCache`: the key is the panel, `Context.cache_key()` (the
reader's scope, region, period and filters), the language of the labels and the current
interval (`INTERVAL` seconds of wall-clock time). The first request of an interval computes;
requests arriving meanwhile wait for that computation (single flight) instead of starting
their own, so a wall of screens on the same county costs one query set per interval. A change
shows on every screen within INTERVAL + the page's polling period (4 s + 4 s).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import Any

from sqlalchemy.orm import Session

from civicgrid.accounts.permissions import Permission
from civicgrid.cockpit import registry
from civicgrid.cockpit.registry import Context, Kind, Memo, Panel, PanelData, View
from civicgrid.core.auth import Actor
from civicgrid.core.db import utcnow
from civicgrid.core.errors import AppError, Invalid, NotFound
from civicgrid.core.i18n import get_locale, gettext
from civicgrid.core.vocab import Platform
from civicgrid.events import stats
from civicgrid.regions import service as regions
from civicgrid.regions.models import Region, RegionLevel

log = logging.getLogger("civicgrid.cockpit")

# Who opens the cockpit: leaders, dispatchers and admins (the roles that supervise events).
READ = Permission.events_supervise
INTERVAL = 4.0  # seconds one computation of a panel serves every viewer of the same scope
POLL_SECONDS = 4  # how often the pages ask for fresh numbers
LEVELS = (RegionLevel.city, RegionLevel.county, RegionLevel.township)  # one cockpit per level


def N_(message: str) -> str:
    return message


LEVEL_TITLES = {
    RegionLevel.city: N_("City cockpit"),
    RegionLevel.county: N_("County cockpit"),
    RegionLevel.township: N_("Township cockpit"),
}


# ---- the shared, single-flight cache -----------------------------------------------------


@dataclass
class _Flight:
    done: threading.Event = field(default_factory=threading.Event)
    value: Any = None
    error: BaseException | None = None


class PanelCache:
    """Values per (key, interval): computed once, concurrent askers wait for the one computation.
    Entries of past intervals are dropped as new ones come in."""

    def __init__(self, interval: float = INTERVAL, clock: Callable[[], float] = time.time) -> None:
        self.interval = interval
        self.clock = clock
        self._lock = threading.Lock()
        self._flights: dict[tuple[Any, ...], _Flight] = {}
        self._memos: dict[tuple[Any, ...], Memo] = {}
        self.computations = 0  # how many times a value was computed (tests, benchmarks)

    def bucket(self) -> int:
        return int(self.clock() // self.interval)

    def _prune(self, bucket: int) -> None:
        for store in (self._flights, self._memos):
            for k in [k for k in store if k[-1] < bucket - 1]:
                del store[k]

    def memo(self, key: tuple[Any, ...]) -> Memo:
        """One memo per context key and interval, for answers several panels share."""
        full = (*key, self.bucket())
        with self._lock:
            m = self._memos.get(full)
            if m is None:
                m = self._memos[full] = Memo()
            return m

    def get(self, key: tuple[Any, ...], compute: Callable[[], Any]) -> Any:
        full = (*key, self.bucket())
        with self._lock:
            flight = self._flights.get(full)
            owner = flight is None
            if flight is None:
                self._prune(full[-1])
                flight = self._flights[full] = _Flight()
        if not owner:
            flight.done.wait()
            if flight.error is not None:
                raise flight.error
            return flight.value
        try:
            flight.value = compute()
            with self._lock:
                self.computations += 1
        except BaseException as exc:
            flight.error = exc
            with self._lock:  # an error is not kept: the next interval (or asker) tries again
                if self._flights.get(full) is flight:
                    del self._flights[full]
            raise
        finally:
            flight.done.set()
        return flight.value

    def clear(self) -> None:
        with self._lock:
            self._flights.clear()
            self._memos.clear()
            self.computations = 0


CACHE = PanelCache()


# ---- context --------------------------------------------------------------------------------


def cockpit_region(session: Session, actor: Actor, code: str | None = None) -> Region:
    """The region of a cockpit: the reader's own by default; another must lie inside their scope
    (else 404, as for any region) and be a city, county or township."""
    region = regions.get_in_scope(session, actor, code) if code else regions.get(session, actor.region_id)
    if region.level not in LEVELS:
        raise Invalid(
            "There is a cockpit for a city, a county or a township; {region} is a smaller area. "
            "Open the cockpit of its township and drill down on the map.",
            region=region.code,
        )
    return region


def context_for(
    session: Session,
    actor: Actor,
    region: Region,
    *,
    first: date | None = None,
    last: date | None = None,
    platform: Platform | str | None = None,
    category: str | None = None,
    org: str | None = None,
    now: datetime | None = None,
) -> Context:
    """A checked context: the region in the reader's scope, a valid period, known filters."""
    regions.check_in_scope(actor, region)
    win = stats.window(first, last, now=now)
    if platform and str(platform) not in Platform.__members__:
        raise Invalid("Choose a platform.", field="platform")
    try:
        f = stats.filters(
            session,
            platform=Platform(platform) if platform else None,
            category=category or None,
            org=org or None,
        )
    except NotFound:
        raise Invalid("Unknown event category {code}.", code=category, field="category") from None
    ctx = Context(
        actor=actor,
        region=region,
        window=win,
        platform=str(platform) if platform else None,
        category=f.category,
        org=f.org,
        now=now,
    )
    return replace(ctx, memo=CACHE.memo(_key(session, ctx)))


def _key(session: Session, ctx: Context) -> tuple[Any, ...]:
    # Labels are translated inside the answer, so the language is part of the key; the database
    # too (a process serving several, as tests do, must never mix their answers).
    return (str(session.get_bind().engine.url), ctx.cache_key(), get_locale())


# ---- panels ---------------------------------------------------------------------------------


def visible_panels(actor: Actor, view: View | None = None) -> list[Panel]:
    return registry.panels(view, actor)


def get_panel(actor: Actor, key: str) -> Panel:
    try:
        panel = registry.get(key)
    except KeyError:
        raise NotFound("No cockpit panel {panel}.", panel=key) from None
    if panel.permission is not None and not actor.can(panel.permission):
        raise NotFound("No cockpit panel {panel}.", panel=key)
    return panel


def panel_dict(panel: Panel, data: PanelData) -> dict[str, Any]:
    """What a page draws and an export writes: the panel's description and its table."""
    return {
        "key": panel.key,
        "title": gettext(panel.title),
        "kind": str(panel.kind),
        "width": panel.width,
        "doc": panel.doc,
        "columns": [{"key": c.key, "label": c.label, "unit": c.unit} for c in data.columns],
        "rows": data.rows,
        "extra": data.extra,
    }


def compute(session: Session, panel: Panel, ctx: Context) -> dict[str, Any]:
    """The panel's answer for the context, computed at most once per interval for all viewers."""
    return CACHE.get((panel.key, *_key(session, ctx)), lambda: panel_dict(panel, panel.query(session, ctx)))


def compute_many(session: Session, panels: Iterable[Panel], ctx: Context) -> dict[str, dict[str, Any]]:
    """Every panel's answer; a panel that fails shows its error and does not take the others down."""
    out: dict[str, dict[str, Any]] = {}
    for p in panels:
        try:
            out[p.key] = compute(session, p, ctx)
        except AppError as exc:
            out[p.key] = {
                "key": p.key,
                "title": gettext(p.title),
                "kind": str(p.kind),
                "error": exc.translated(),
            }
        except Exception:
            log.exception("cockpit panel %s failed", p.key)
            out[p.key] = {
                "key": p.key,
                "title": gettext(p.title),
                "kind": str(p.kind),
                "error": gettext("This panel could not be computed."),
            }
    return out


def as_of() -> str:
    return utcnow().isoformat(timespec="seconds")


def report_subtitle(session: Session, ctx: Context) -> str:
    """Period, filters and time of a report, in the reader's language."""
    from civicgrid.accounts import service as accounts
    from civicgrid.core.vocab import PLATFORM_LABELS
    from civicgrid.events import service as events

    parts = [gettext("Period {first} to {last}", first=ctx.window.first, last=ctx.window.last)]
    if ctx.platform:
        parts.append(gettext(PLATFORM_LABELS[Platform(ctx.platform)]))
    if ctx.category:
        parts.append(events.get_category(session, ctx.category).name)
    if ctx.org:
        parts.append(accounts.get_org_by_code(session, ctx.org).name)
    local = (utcnow() + events.LOCAL_DAY_OFFSET).strftime("%Y-%m-%d %H:%M")
    parts.append(gettext("as of {time}", time=local))
    return " · ".join(parts)


def filter_options(session: Session, actor: Actor) -> dict[str, list[tuple[str, str]]]:
    """Choices of the analytic view's filters: platforms, categories (big classes with their
    sub-classes) and the departments of the reader's scope."""
    from civicgrid.accounts import service as accounts
    from civicgrid.accounts.models import OrgKind
    from civicgrid.core.vocab import PLATFORM_LABELS
    from civicgrid.events import service as events

    cats = events.list_categories(session)
    classes = {c.id: c for c in cats if c.parent_id is None}
    categories: list[tuple[str, str]] = []
    for cls in sorted(classes.values(), key=lambda c: c.code):
        categories.append((cls.code, cls.name))
        categories += [(c.code, f"{cls.name} › {c.name}") for c in cats if c.parent_id == cls.id]
    return {
        "platforms": [(str(p), gettext(label)) for p, label in PLATFORM_LABELS.items()],
        "categories": categories,
        "orgs": [(o.code, o.name) for o in accounts.list_orgs(session, actor, kind=OrgKind.department)],
    }


__all__ = [
    "CACHE",
    "INTERVAL",
    "LEVELS",
    "POLL_SECONDS",
    "READ",
    "Kind",
    "PanelCache",
    "View",
    "cockpit_region",
    "compute",
    "compute_many",
    "context_for",
    "get_panel",
    "panel_dict",
    "visible_panels",
]
