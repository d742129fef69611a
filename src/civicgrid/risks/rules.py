"""Rule kinds and their parameters: parsing and validation of the JSON an admin writes, into a
`Spec` the evaluation reads. Anything unknown, out of range or unbounded is refused with a
message naming the parameter; nothing is guessed.

    threshold  {"categories": [...], "window_days": 7, "per": "township",
                "levels": {"yellow": 5, "red": 10}}
    cluster    {"categories": [...]?, "radius_m": 200, "days": 3, "per": "village", "levels": {"yellow": 4}}
    trend      {"categories": [...], "min_count": 5, "per": "township",
                "levels": {"yellow": 50, "orange": 100}}
    repeat     {"key": "address" | "party", "days": 90, "categories": [...]?, "include_disputes": true,
                "per": "village", "levels": {"yellow": 3, "orange": 5}}
    data       {"dataset": "name", "conditions": [{"field", "op", "value"}], "region_field": "code"?,
                "max_rows": 1000, "levels": {"yellow": 1, "red": 5}}
    manual     {"level": "yellow"}

Every kind may add "deadline_hours": {"red": 2, …} and "clock": "working" | "calendar".
`levels` maps a warning level to the value that reaches it (counts; for trend the growth in
percent); a more serious level needs a strictly larger value.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from civicgrid.core.auth import Actor
from civicgrid.core.errors import Invalid
from civicgrid.regions.models import LEVEL_ORDER, Region, RegionLevel
from civicgrid.risks.models import LEVEL_RANK, RuleKind, WarningLevel

DAY = 86_400
TREND_WEEK = 7 * DAY
MAX_WINDOW_DAYS = {"threshold": 90.0, "cluster": 30.0, "repeat": 90.0}
MIN_WINDOW_DAYS = 1 / 24  # one hour
RADIUS_M = (10.0, 5000.0)
MAX_COUNT = 100_000
MAX_GROWTH = 100_000.0
MAX_ROWS = 5000
MAX_CATEGORIES = 100
PER_LEVELS = (RegionLevel.county, RegionLevel.township, RegionLevel.village, RegionLevel.grid)
DEFAULT_PER = {
    RuleKind.threshold: RegionLevel.township,
    RuleKind.trend: RegionLevel.township,
    RuleKind.cluster: RegionLevel.village,
    RuleKind.repeat: RegionLevel.village,
}
COMMON_KEYS = {"levels", "deadline_hours", "clock"}
KEYS: dict[RuleKind, set[str]] = {
    RuleKind.threshold: COMMON_KEYS | {"categories", "window_days", "per"},
    RuleKind.cluster: COMMON_KEYS | {"categories", "radius_m", "days", "per"},
    RuleKind.trend: COMMON_KEYS | {"categories", "min_count", "per"},
    RuleKind.repeat: COMMON_KEYS | {"key", "days", "categories", "include_disputes", "per"},
    RuleKind.data: COMMON_KEYS | {"dataset", "conditions", "region_field", "max_rows"},
    RuleKind.manual: {"level", "deadline_hours", "clock"},
}
EVENT_KINDS = (RuleKind.threshold, RuleKind.cluster, RuleKind.trend, RuleKind.repeat)


@dataclass(frozen=True)
class Spec:
    """A rule's parameters, checked. Times are in seconds, distances in metres."""

    kind: RuleKind
    levels: tuple[tuple[WarningLevel, float], ...] = ()  # mildest first
    categories: tuple[str, ...] = ()
    category_ids: frozenset[int] | None = None  # None: every category
    per: RegionLevel | None = None
    window_s: int = 0  # threshold window, cluster T, repeat D, trend one week
    radius_m: float = 0.0
    min_count: int = 0
    key: str = ""
    include_disputes: bool = False
    dataset: str = ""
    conditions: tuple[dict[str, Any], ...] = ()
    region_field: str = ""
    max_rows: int = 0
    manual_level: WarningLevel | None = None
    deadline_hours: dict[str, float] = field(default_factory=dict)
    clock: str | None = None

    @property
    def trigger(self) -> float:
        """The smallest value that raises a warning."""
        return self.levels[0][1] if self.levels else math.inf

    def level_for(self, value: float) -> WarningLevel | None:
        found = None
        for level, need in self.levels:
            if value >= need:
                found = level
        return found

    @property
    def lookback_s(self) -> int:
        """How far before an anchor event its evidence and counts reach."""
        return 2 * TREND_WEEK if self.kind == RuleKind.trend else self.window_s

    @property
    def horizon_s(self) -> int:
        """Anchors older than this before `now` raise nothing any more (their window is past)."""
        return self.window_s

    @property
    def reach_s(self) -> int:
        """A new event changes the windows anchored up to this long after it."""
        return self.lookback_s


def _number(raw: Any, name: str) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
        raise Invalid("Parameter {param} must be a number.", param=name, field=name)
    return float(raw)


def _ranged(raw: Any, name: str, lo: float, hi: float) -> float:
    value = _number(raw, name)
    if not lo <= value <= hi:
        raise Invalid(
            "Parameter {param} must be between {low} and {high}.", param=name, low=lo, high=hi, field=name
        )
    return value


def _whole(raw: Any, name: str, lo: int, hi: int) -> int:
    value = _ranged(raw, name, lo, hi)
    if not value.is_integer():
        raise Invalid("Parameter {param} must be a whole number.", param=name, field=name)
    return int(value)


def _required(raw: Mapping[str, Any], name: str) -> Any:
    if name not in raw or raw[name] is None or raw[name] == "" or raw[name] == []:
        raise Invalid("Parameter {param} is required for this kind of rule.", param=name, field=name)
    return raw[name]


def _level(raw: Any, name: str) -> WarningLevel:
    from civicgrid.risks.service import level_of

    try:
        return level_of(raw)
    except Invalid:
        raise Invalid(
            "Parameter {param}: unknown warning level {level}; use red, orange, yellow or blue.",
            param=name,
            level=str(raw)[:20],
            field=name,
        ) from None


def _levels(raw: Any, kind: RuleKind) -> tuple[tuple[WarningLevel, float], ...]:
    if not isinstance(raw, Mapping) or not raw:
        raise Invalid(
            "Parameter levels maps at least one warning level to the value that reaches it, "
            'e.g. {{"yellow": 5, "red": 10}}.',
            field="levels",
        )
    out: dict[WarningLevel, float] = {}
    for name, value in raw.items():
        level = _level(name, "levels")
        if level in out:
            raise Invalid("Parameter levels names {level} twice.", level=str(level), field="levels")
        if kind == RuleKind.trend:
            out[level] = _ranged(value, f"levels.{level}", 1, MAX_GROWTH)
        else:
            low = 2 if kind in (RuleKind.cluster, RuleKind.repeat) else 1
            out[level] = _whole(value, f"levels.{level}", low, MAX_COUNT)
    ordered = sorted(out.items(), key=lambda kv: LEVEL_RANK[kv[0]])
    for (a, va), (b, vb) in itertools.pairwise(ordered):
        if vb <= va:
            raise Invalid(
                "Parameter levels: {higher} must need more than {lower} ({hv} is not more than {lv}).",
                higher=str(b),
                lower=str(a),
                hv=vb,
                lv=va,
                field="levels",
            )
    return tuple(ordered)


def _categories(session: Session, raw: Any, required: bool) -> tuple[tuple[str, ...], frozenset[int] | None]:
    from civicgrid.events.models import Category

    if raw is None or raw == []:
        if required:
            raise Invalid(
                "Parameter {param} is required for this kind of rule.", param="categories", field="categories"
            )
        return (), None
    if not isinstance(raw, list) or not all(isinstance(c, str) for c in raw):
        raise Invalid("Parameter categories is a list of category codes.", field="categories")
    if len(raw) > MAX_CATEGORIES:
        raise Invalid("At most {max} categories per rule.", max=MAX_CATEGORIES, field="categories")
    codes = tuple(dict.fromkeys(c.strip() for c in raw))
    found = {c.code: c for c in session.scalars(select(Category).where(Category.code.in_(codes)))}
    ids: set[int] = set()
    for code in codes:
        c = found.get(code)
        if c is None:
            raise Invalid("Unknown event category {code}.", code=code, field="categories")
        if c.parent_id is None:  # a big class takes in every sub-class
            ids.update(session.scalars(select(Category.id).where(Category.parent_id == c.id)))
        ids.add(c.id)
    return codes, frozenset(ids)


def _per(raw: Any, kind: RuleKind, region: Region) -> RegionLevel:
    value = raw if raw not in (None, "") else str(DEFAULT_PER[kind])
    try:
        per = RegionLevel(str(value))
    except ValueError:
        raise Invalid(
            "Parameter per must be one of county, township, village or grid.", field="per"
        ) from None
    if per not in PER_LEVELS:
        raise Invalid("Parameter per must be one of county, township, village or grid.", field="per")
    if LEVEL_ORDER.index(per) < LEVEL_ORDER.index(RegionLevel(region.level)):
        raise Invalid(
            "Parameter per ({per}) is above the rule's region; choose its level or a lower one.",
            per=str(per),
            field="per",
        )
    return per


def _window(raw: Mapping[str, Any], name: str, kind: str, default: float | None = None) -> int:
    if name not in raw and default is not None:
        return int(default * DAY)
    if name not in raw or raw[name] in (None, ""):
        raise Invalid(
            "Parameter {param} is required: a rule without a time window would scan all history.",
            param=name,
            field=name,
        )
    days = _ranged(raw[name], name, MIN_WINDOW_DAYS, MAX_WINDOW_DAYS[kind])
    return round(days * DAY)


def _deadlines(raw: Mapping[str, Any]) -> tuple[dict[str, float], str | None]:
    hours: dict[str, float] = {}
    given = raw.get("deadline_hours")
    if given is not None:
        if not isinstance(given, Mapping):
            raise Invalid("Parameter deadline_hours maps warning levels to hours.", field="deadline_hours")
        for name, value in given.items():
            hours[str(_level(name, "deadline_hours"))] = _ranged(
                value, f"deadline_hours.{name}", 0.25, 24 * 30
            )
    clock = raw.get("clock")
    if clock not in (None, "working", "calendar"):
        raise Invalid("Parameter clock is working or calendar.", field="clock")
    return hours, clock


def load_json(text: str | Mapping[str, Any] | None) -> dict[str, Any]:
    """Parameters from the editor's JSON text (or an already-parsed object)."""
    if text is None or text == "":
        return {}
    if isinstance(text, Mapping):
        return dict(text)
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise Invalid(
            "The parameters are not valid JSON (line {line}, column {column}).",
            line=getattr(exc, "lineno", 1),
            column=getattr(exc, "colno", 1),
            field="params",
        ) from None
    if not isinstance(value, dict):
        raise Invalid("The parameters must be a JSON object.", field="params")
    return value


def parse(
    session: Session, kind: RuleKind | str, raw: Mapping[str, Any], region: Region, actor: Actor | None = None
) -> Spec:
    """Check a rule's parameters; `actor` (when given) must be able to see a data rule's dataset."""
    try:
        kind = RuleKind(str(kind))
    except ValueError:
        raise Invalid(
            "Unknown rule kind {kind}; use threshold, cluster, trend, repeat, data or manual.",
            kind=str(kind)[:20],
            field="kind",
        ) from None
    unknown = sorted(set(raw) - KEYS[kind])
    if unknown:
        raise Invalid(
            "Unknown parameter {param} for a {kind} rule.",
            param=unknown[0][:40],
            kind=str(kind),
            field="params",
        )
    hours, clock = _deadlines(raw)
    common: dict[str, Any] = {"kind": kind, "deadline_hours": hours, "clock": clock}
    if kind == RuleKind.manual:
        level = _level(raw.get("level", "yellow"), "level")
        return Spec(manual_level=level, levels=((level, 0.0),), **common)
    levels = _levels(raw.get("levels"), kind)
    if kind == RuleKind.threshold:
        codes, ids = _categories(session, raw.get("categories"), required=True)
        return Spec(
            levels=levels,
            categories=codes,
            category_ids=ids,
            per=_per(raw.get("per"), kind, region),
            window_s=_window(raw, "window_days", "threshold"),
            **common,
        )
    if kind == RuleKind.cluster:
        codes, ids = _categories(session, raw.get("categories"), required=False)
        return Spec(
            levels=levels,
            categories=codes,
            category_ids=ids,
            per=_per(raw.get("per"), kind, region),
            window_s=_window(raw, "days", "cluster"),
            radius_m=_ranged(_required(raw, "radius_m"), "radius_m", *RADIUS_M),
            **common,
        )
    if kind == RuleKind.trend:
        codes, ids = _categories(session, raw.get("categories"), required=True)
        return Spec(
            levels=levels,
            categories=codes,
            category_ids=ids,
            per=_per(raw.get("per"), kind, region),
            window_s=TREND_WEEK,
            min_count=_whole(_required(raw, "min_count"), "min_count", 1, MAX_COUNT),
            **common,
        )
    if kind == RuleKind.repeat:
        key = _required(raw, "key")
        if key not in ("address", "party"):
            raise Invalid("Parameter key is address or party.", field="key")
        codes, ids = _categories(session, raw.get("categories"), required=False)
        include = raw.get("include_disputes", True)
        if not isinstance(include, bool):
            raise Invalid("Parameter include_disputes is true or false.", field="include_disputes")
        return Spec(
            levels=levels,
            categories=codes,
            category_ids=ids,
            per=_per(raw.get("per"), kind, region),
            window_s=_window(raw, "days", "repeat", default=90),
            key=key,
            include_disputes=include,
            **common,
        )
    return _data_spec(session, raw, levels, common, actor)


def _data_spec(
    session: Session,
    raw: Mapping[str, Any],
    levels: tuple[tuple[WarningLevel, float], ...],
    common: dict[str, Any],
    actor: Actor | None,
) -> Spec:
    from civicgrid.data import access
    from civicgrid.data import service as data
    from civicgrid.data.models import FieldType

    name = _required(raw, "dataset")
    if not isinstance(name, str):
        raise Invalid("Parameter dataset is a dataset name.", field="dataset")
    if actor is None or (actor.via == "system" and actor.user_id == 0):
        ds = data.get_dataset(session, name)
    else:
        ds = data.get_visible(session, actor, name)
    conditions = raw.get("conditions")
    if not conditions:
        raise Invalid(
            "Parameter conditions is required: a data rule without a condition would match every row.",
            field="conditions",
        )
    parsed = access.parse_conditions(ds, conditions)
    region_field = raw.get("region_field") or ""
    if region_field:
        f = next((f for f in ds.fields if f.name == region_field), None)
        if f is None:
            raise Invalid(
                "Dataset {dataset} has no field {field}.", dataset=ds.name, field=str(region_field)[:60]
            )
        if f.type != FieldType.string or access.is_protected(f):
            raise Invalid(
                "Field {field} cannot hold region codes: it must be a text field without personal data.",
                field=region_field,
            )
    max_rows = _whole(raw.get("max_rows", 1000), "max_rows", 1, MAX_ROWS)
    return Spec(
        levels=levels,
        dataset=ds.name,
        conditions=tuple(c.as_dict() for c in parsed),
        region_field=str(region_field),
        max_rows=max_rows,
        **common,
    )


def params_text(raw: Mapping[str, Any]) -> str:
    """The stored form: the admin's JSON, normalised (sorted keys, Chinese kept readable)."""
    return json.dumps(dict(raw), ensure_ascii=False, sort_keys=True, indent=1)
