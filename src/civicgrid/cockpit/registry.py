"""The panel registry: each capability registers its own cockpit panels, so a new module adds
panels without editing cockpit code.

A capability puts its panels in `civicgrid/<package>/panels.py` and calls `register(Panel(...))`
at import time; `load()` imports every such module once. A panel's query reads statistics
functions or rollups of its own capability (never raw tables row by row) and returns
`PanelData`: one table of columns and rows, which the page draws as the panel's chart kind and
the export writes as CSV or Excel unchanged — so what is drawn is exactly what is exported.
"""

from __future__ import annotations

import enum
import importlib
import pkgutil
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from civicgrid.core.auth import Actor
from civicgrid.regions.models import Region


class Kind(enum.StrEnum):
    """How the page draws a panel's table (ECharts, or plain HTML for `number` and `table`)."""

    number = "number"  # big figures: one row, each column one figure
    line = "line"  # first column the x axis (dates), the others one series each
    bar = "bar"  # first column the category, the others one series each
    ranking = "ranking"  # horizontal bars, rows already sorted best first
    pie = "pie"  # first column the name, second the value
    funnel = "funnel"  # first column the stage, second the value
    gauge = "gauge"  # one row: value and (optional) target, as ratios 0..1
    table = "table"  # a list; a column named "url" turns each row into a link
    map = "map"  # rows per region code: the choropleth of the current drill-down level


class View(enum.StrEnum):
    screen = "screen"  # the dark full-screen big-screen view (1920×1080)
    analytic = "analytic"  # the light view with filters


T = TypeVar("T")


class Memo:
    """Single-flight memo: the first caller of a name computes, concurrent callers wait for it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, Any] = {}
        self._locks: dict[str, threading.Lock] = {}

    def get(self, name: str, compute: Callable[[], T]) -> T:
        with self._lock:
            if name in self._values:
                return self._values[name]
            lock = self._locks.setdefault(name, threading.Lock())
        with lock:
            with self._lock:
                if name in self._values:
                    return self._values[name]
            value = compute()
            with self._lock:
                self._values[name] = value
            return value


@dataclass(frozen=True)
class Context:
    """What a panel is asked about: who reads, which region (inside the reader's scope, already
    checked), which local-date window and filters. Equal contexts give equal answers, so the
    cockpit computes a panel once per interval for every viewer with the same context."""

    actor: Actor
    region: Region
    window: Any  # civicgrid.events.stats.Window (local dates first..last, UTC start/end)
    platform: str | None = None
    category: str | None = None  # category code (a big class takes in its sub-classes)
    org: str | None = None  # org code
    now: datetime | None = None
    # Answers shared by several panels of the same context (one `summary` for the flow figures
    # and the rates); the cockpit service gives every viewer of a scope the same Memo for an
    # interval. Not part of the context's identity.
    memo: Memo | None = field(default=None, compare=False, repr=False)

    def shared(self, name: str, compute: Callable[[], T]) -> T:
        """`compute()` once per memo (i.e. once per interval and scope), else every call."""
        return self.memo.get(name, compute) if self.memo is not None else compute()

    def cache_key(self) -> tuple[Any, ...]:
        """Everything the answer depends on apart from time; the reader's region scope is part
        of it because a panel may only ever show the reader's own subtree."""
        return (
            self.actor.region_path,
            self.region.id,
            self.window.first,
            self.window.last,
            self.platform,
            self.category,
            self.org,
        )


@dataclass
class Column:
    key: str
    label: str  # already translated
    unit: str = ""  # "", "%", "h", "events" … shown in the legend and the CSV header


@dataclass
class PanelData:
    columns: list[Column]
    rows: list[list[Any]]
    # Anything the chart needs beyond the table: a target line {"target": 0.9}, the metric
    # definition anchors {"docs": {"closure_rate": "docs/metrics.md#closure_rate"}}, for maps
    # {"level": "township", "parent": "331082"}. JSON-serialisable.
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Panel:
    key: str  # "<package>.<name>", unique; used in URLs and export file names
    title: str  # English msgid, translated when shown
    kind: Kind
    query: Callable[[Session, Context], PanelData]
    order: int = 100  # smaller first
    views: tuple[View, ...] = (View.screen, View.analytic)
    width: int = 1  # grid columns the panel spans (1..3)
    doc: str = ""  # anchor in docs/metrics.md defining the panel's numbers
    permission: str | None = None  # a Permission value the reader needs to see it


_PANELS: dict[str, Panel] = {}
_loaded = False


def register(panel: Panel) -> Panel:
    if panel.key in _PANELS and _PANELS[panel.key] != panel:
        raise ValueError(f"panel {panel.key} is registered twice")
    _PANELS[panel.key] = panel
    return panel


def load() -> None:
    """Import every `civicgrid.<package>.panels` module once (they register themselves)."""
    global _loaded
    if _loaded:
        return
    import civicgrid

    for info in pkgutil.iter_modules(civicgrid.__path__):
        if info.ispkg and importlib.util.find_spec(f"civicgrid.{info.name}.panels") is not None:
            importlib.import_module(f"civicgrid.{info.name}.panels")
    _loaded = True


def panels(view: View | None = None, actor: Actor | None = None) -> list[Panel]:
    """The registered panels for a view that the reader may see, in order."""
    load()
    out = [p for p in _PANELS.values() if view is None or view in p.views]
    if actor is not None:
        out = [p for p in out if p.permission is None or actor.can(p.permission)]
    return sorted(out, key=lambda p: (p.order, p.key))


def get(key: str) -> Panel:
    load()
    return _PANELS[key]
