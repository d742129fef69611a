"""Rule evaluation over events (and disputes): what each rule finds, for the worker's
incremental run, its periodic full pass and the editor's dry run — one implementation for all
three, so they cannot disagree.

A rule is judged at *anchors*: every matching event is the end of a window. The window ending at
anchor `a` holds the matching events of the same region (threshold, trend), within R metres
(cluster) or of the same address or party (repeat) whose time lies in (a.t − window, a.t]. An
anchor whose window reaches the rule's lowest level is a hit; a rule's findings are, per region,
the union of its hits' windows (the evidence) at the highest level any of them reached.
Anchors older than one window before `now` raise nothing (their window has passed).

The full pass computes the hits of every anchor in one vectorised pass over the events of the
horizon; the incremental run computes, for each new event, only the anchors whose windows can
contain it (the same function on a small candidate set). Adding an event only ever adds hits
and evidence (threshold, cluster, repeat), so processing events one by one and a full pass end
with the same warnings; a trend's growth can fall when an older event arrives late, which the
incremental run cannot take back (see docs/decisions-risks.md).
"""

from __future__ import annotations

import functools
import hashlib
import math
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import shapely
from numpy.typing import NDArray
from sqlalchemy import ColumnElement, Integer, Select, and_, any_, bindparam, case, func, select, true
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from civicgrid.events.models import Event, State
from civicgrid.regions.models import Region, RegionLevel
from civicgrid.risks.models import LEVEL_RANK, RuleKind, WarningLevel
from civicgrid.risks.rules import Spec

I64 = NDArray[np.int64]
F64 = NDArray[np.float64]
BOOL = NDArray[np.bool_]

EVENT, DISPUTE = 0, 1
SOURCE_NAMES = {EVENT: "event", DISPUTE: "dispute"}
EXCLUDED_STATES = (State.merged, State.rejected)  # duplicates and non-matters are not risk signals
EARTH_RADIUS_M = 6_371_000.0
SHIFT = np.int64(1 << 34)  # group rank × SHIFT + unix seconds: one sortable key
RANK_LEVEL = {v: k for k, v in LEVEL_RANK.items()}
REGION_COLUMNS = ("grid", "village", "township", "county")


# ---- where to look: townships and grids near a point (the township-leading event index) -----------

_TOWNS: dict[str, tuple[float, tuple[Any, ...], dict[int, int], dict[int, list[int]]]] = {}
TOWNS_TTL_S = 60.0


def _town_maps(session: Session) -> tuple[dict[int, int], dict[int, list[int]]]:
    """grid id → township id, and county id → township ids (cached per database, re-read when
    the region table changes; checked at most once a minute)."""
    import time

    key = str(session.get_bind().engine.url)
    hit = _TOWNS.get(key)
    # Regions change rarely (an import): within the TTL the maps are trusted without a query,
    # after it a small stamp query decides whether to rebuild them.
    if hit is not None and time.monotonic() - hit[0] < TOWNS_TTL_S:
        return hit[2], hit[3]
    stamp = tuple(
        session.execute(select(func.count(Region.id), func.max(Region.id), func.max(Region.updated_at))).one()
    )
    if hit is not None and hit[1] == stamp:
        _TOWNS[key] = (time.monotonic(), *hit[1:])
        return hit[2], hit[3]
    rows = session.execute(select(Region.id, Region.code, Region.level, Region.path)).all()
    town_id = {r.code: r.id for r in rows if r.level == RegionLevel.township}
    county_code = {r.id: r.code for r in rows if r.level == RegionLevel.county}
    grid_town: dict[int, int] = {}
    county_towns: dict[int, list[int]] = {cid: [] for cid in county_code}
    county_by_code = {v: k for k, v in county_code.items()}
    for r in rows:
        parts = r.path.strip("/").split("/")
        if r.level == RegionLevel.grid:
            town = next((town_id[c] for c in parts if c in town_id), None)
            if town is not None:
                grid_town[r.id] = town
        elif r.level == RegionLevel.township:
            county = next((county_by_code[c] for c in parts if c in county_by_code), None)
            if county is not None:
                county_towns[county].append(r.id)
    _TOWNS[key] = (time.monotonic(), stamp, grid_town, county_towns)
    return grid_town, county_towns


def _grids_near(session: Session, lon: float, lat: float, dlon: float, dlat: float) -> list[int]:
    """Grids whose polygon meets the box around a point (the regions' STRtree)."""
    from civicgrid.regions import service as regions

    index = regions.grid_index(session)
    hits = index.tree.query(shapely.box(lon - dlon, lat - dlat, lon + dlon, lat + dlat))
    return sorted(int(index.ids[h]) for h in hits)


# ---- the events, as arrays -------------------------------------------------------------------


@dataclass
class Events:
    """One row per event (or per dispute and subject): the columns the rules read."""

    src: I64
    id: I64
    t: I64  # unix seconds (floor)
    category: I64  # -1 for disputes
    grid: I64
    village: I64
    township: I64
    county: I64
    lon: F64
    lat: F64
    subject: I64 = field(default_factory=lambda: np.zeros(0, np.int64))  # dense key (repeat); -1: none

    def __len__(self) -> int:
        return len(self.id)

    def column(self, level: RegionLevel | str) -> I64:
        arr: I64 = getattr(self, str(level))
        return arr

    def take(self, mask: BOOL | I64) -> Events:
        parts = {name: getattr(self, name)[mask] for name in _ARRAYS[:-1]}
        return Events(**parts, subject=self.subject[mask] if len(self.subject) else self.subject)

    @staticmethod
    def concat(parts: Sequence[Events]) -> Events:
        if not parts:
            return empty_events()
        with_subject = all(len(p.subject) == len(p) for p in parts)
        arrays = {name: np.concatenate([getattr(p, name) for p in parts]) for name in _ARRAYS[:-1]}
        subject = np.concatenate([p.subject for p in parts]) if with_subject else np.zeros(0, np.int64)
        return Events(**arrays, subject=subject)


_ARRAYS = ("src", "id", "t", "category", "grid", "village", "township", "county", "lon", "lat", "subject")


def empty_events() -> Events:
    z = np.zeros(0, np.int64)
    f = np.zeros(0, np.float64)
    return Events(z, z, z, z, z, z, z, z, f, f, z)


def unix_seconds(session: Session, column: Any) -> Any:
    """Seconds since 1970 as an integer, computed by the database (floor, both backends)."""
    if session.get_bind().dialect.name == "postgresql":
        return func.cast(func.floor(func.extract("epoch", column)), _BigInteger())
    return func.cast(func.strftime("%s", column), _BigInteger())


def _BigInteger() -> Any:
    from sqlalchemy import BigInteger

    return BigInteger()


def to_unix(at: datetime) -> int:
    return int(at.astimezone(UTC).timestamp() // 1)


def from_unix(t: int) -> datetime:
    return datetime.fromtimestamp(int(t), UTC)


_BASE: dict[tuple[str, str], Select[Any]] = {}


def event_stmt(session: Session, *where: ColumnElement[bool], subject: str = "") -> Select[Any]:
    dialect = session.get_bind().dialect.name
    base = _BASE.get((dialect, subject))
    if base is None:  # built once per dialect and shape: building a select costs more than running it
        base = _BASE[(dialect, subject)] = _event_select(session, subject)
    return base.where(*where)


def _event_select(session: Session, subject: str) -> Select[Any]:
    cols: list[Any] = [
        Event.id,
        unix_seconds(session, Event.reported_at),
        Event.category_id,
        Event.grid_id,
        Event.village_id,
        Event.township_id,
        Event.county_id,
        Event.lon,
        Event.lat,
    ]
    if subject == "address":
        cols.append(Event.address)
    elif subject == "party":
        cols.append(Event.reporter_phone)
    elif subject == "new":  # the incremental run's new events: every state, with their subjects
        cols += [Event.state, Event.address, Event.reporter_phone, Event.reported_at]
        return select(*cols)
    return select(*cols).where(Event.state.not_in(EXCLUDED_STATES))


def has_subject(kind: str) -> ColumnElement[bool]:
    """Events with an address (or reporter phone) at all: the others are nobody's repeat (an
    empty text has no key), and most events have no phone."""
    column = Event.address if kind == "address" else Event.reporter_phone
    return column != ""  # NULL is left out too


class Subjects:
    """Dense integer keys for subject strings (hashes), stable within one evaluation."""

    def __init__(self) -> None:
        self.keys: dict[str, int] = {}
        self._texts: dict[str, dict[str | None, int]] = {}

    def rank(self, key: str | None) -> int:
        if not key:
            return -1
        return self.keys.setdefault(key, len(self.keys))

    def rank_text(self, kind: str, text: str | None) -> int:
        """The rank of an address or phone as written: each distinct text is normalised and
        hashed once (a full pass meets hundreds of thousands)."""
        seen = self._texts.setdefault(kind, {})
        found = seen.get(text)
        if found is None:
            found = seen[text] = self.rank(subject_key(kind, text))
        return found


def normalise_address(text: str | None) -> str:
    """Full-width to half-width, case and every space removed: 东山路 12 号 == 东山路12号."""
    if not text:
        return ""
    return "".join(unicodedata.normalize("NFKC", text).lower().split())


def normalise_phone(text: str | None) -> str:
    digits = "".join(ch for ch in (text or "") if ch.isdigit())
    if digits.startswith("86") and len(digits) == 13:
        digits = digits[2:]
    return digits if len(digits) >= 7 else ""


@functools.lru_cache(maxsize=200_000)
def subject_key(kind: str, value: str | None) -> str:
    """The stored key of an address or party: a hash, so the index holds no personal data."""
    norm = normalise_address(value) if kind == "address" else normalise_party(value)
    if not norm:
        return ""
    return hashlib.sha256(f"{kind}:{norm}".encode()).hexdigest()[:32]


def normalise_party(value: str | None) -> str:
    """A party is an ID number (upper-cased) or a phone number; names alone are too ambiguous."""
    text = "".join((value or "").split()).upper()
    if len(text) in (15, 18) and text[:-1].isdigit():
        return "id:" + text
    if len(text) == 18 and text[:2].isalnum():  # 统一社会信用代码
        return "org:" + text
    phone = normalise_phone(text)
    return "tel:" + phone if phone else ""


def _events_of(rows: Sequence[Any], subject: str = "", subjects: Subjects | None = None) -> Events:
    """Rows of `event_stmt` (id, seconds, category, grid, village, township, county, lon, lat
    [, subject text]) as arrays."""
    if not rows:
        return empty_events()
    n = len(rows)
    cols = list(zip(*rows, strict=True))
    ints = [np.fromiter(c, np.int64, n) for c in cols[:7]]
    ev = Events(
        np.zeros(n, np.int64),
        ints[0],
        ints[1],
        ints[2],
        ints[3],
        ints[4],
        ints[5],
        ints[6],
        np.fromiter(cols[7], np.float64, n),
        np.fromiter(cols[8], np.float64, n),
    )
    if subject:
        subjects = subjects or Subjects()
        rank = subjects.rank_text
        ev.subject = np.fromiter((rank(subject, v) for v in cols[9]), np.int64, n)
    return ev


def load_events(
    session: Session,
    *where: ColumnElement[bool],
    subject: str = "",
    subjects: Subjects | None = None,
) -> Events:
    """The matching events as arrays (state merged/rejected left out)."""
    rows = run(session, event_stmt(session, *where, subject=subject)).all()
    return _events_of(rows, subject, subjects)


_PREPARED: dict[tuple[str, str], Any] = {}


def run(session: Session, stmt: Any, params: Any = None) -> Any:
    """Execute on the session's connection: the incremental run's small reads and writes need
    none of the ORM's per-statement machinery, which costs more than the queries themselves."""
    return session.connection().execute(stmt, params if params is not None else {})


def prepared(session: Session, name: str, build: Any, *args: Any) -> Any:
    """A statement built once per dialect and shape, with bound parameters: the incremental run's
    hot reads skip building expressions and their cache keys (which cost more than the query)."""
    key = (session.get_bind().dialect.name, name)
    stmt = _PREPARED.get(key)
    if stmt is None:
        stmt = _PREPARED[key] = build(*args)
    return stmt


def load_new(session: Session, after: int, limit: int) -> list[Any]:
    """The next events after id `after`, in id order, every state, with what the incremental run
    needs: the rule columns, state, address, reporter phone, times (one read per batch)."""
    stmt = prepared(
        session,
        "new",
        lambda: (
            _event_select(session, "new")
            .add_columns(Event.created_at)
            .where(Event.id > bindparam("after"))
            .order_by(Event.id)
            .limit(bindparam("limit"))
        ),
    )
    return list(run(session, stmt, {"after": after, "limit": limit}).all())


def lock_and_load(session: Session, cursor_table: Any, name: str, limit: int) -> tuple[int, list[Any]] | None:
    """PostgreSQL: lock the cursor row (SKIP LOCKED) and read the events after it in one round
    trip; also makes this transaction's commit asynchronous (see docs/decisions.md: a lost commit
    loses the cursor move with the warnings, so the events are evaluated again). None when no
    row came back: another worker holds the cursor, or it does not exist yet."""

    def build() -> Any:
        c = (
            select(cursor_table.c.last_id)
            .where(cursor_table.c.name == bindparam("cursor"))
            .with_for_update(skip_locked=True)
            .cte("cur")
        )
        ev = (
            _event_select(session, "new")
            .add_columns(Event.created_at)
            .where(Event.id > c.c.last_id)
            .order_by(Event.id)
            .limit(bindparam("limit"))
            .lateral("ev")
        )
        return select(
            *ev.c,
            c.c.last_id.label("cursor_last"),
            func.set_config("synchronous_commit", "off", True).label("async_commit"),
        ).select_from(c.outerjoin(ev, true()))

    got = run(session, prepared(session, "lock_and_load", build), {"cursor": name, "limit": limit}).all()
    if not got:
        return None
    return int(got[0].cursor_last), [r for r in got if r.id is not None]


def new_events(rows: Sequence[Any]) -> Events:
    """The arrays of new rows (merged and rejected left out, as everywhere)."""
    return _events_of([r for r in rows if r[9] not in EXCLUDED_STATES])


def dispute_parts(session: Session, *where: ColumnElement[bool], subject: str, subjects: Subjects) -> Events:
    """Disputes as subject rows: one per dispute (address) or per party with an ID number or phone."""
    try:
        from civicgrid.disputes.models import Dispute, Party
    except ImportError:  # the disputes capability is not installed
        return empty_events()
    base = [
        Dispute.id,
        unix_seconds(session, Dispute.registered_at),
        Dispute.grid_id,
        Dispute.village_id,
        Dispute.township_id,
        Dispute.county_id,
    ]
    if subject == "address":
        rows = [
            (*r[:6], subject_key("address", r[6]))
            for r in session.execute(select(*base, Dispute.address).where(*where))
        ]
    else:
        stmt = (
            select(*base, Party.id_number, Party.phone)
            .join(Party, Party.dispute_id == Dispute.id)
            .where(*where)
        )
        rows = []
        for r in session.execute(stmt):
            key = subject_key("party", r[6]) or subject_key("party", r[7])
            rows.append((*r[:6], key))
    rows = [r for r in rows if r[6]]
    if not rows:
        return empty_events()
    n = len(rows)
    cols = list(zip(*rows, strict=True))
    ints = [np.fromiter(c, np.int64, n) for c in cols[:6]]
    nan = np.full(n, np.nan)
    return Events(
        np.ones(n, np.int64),
        ints[0],
        ints[1],
        np.full(n, -1, np.int64),
        ints[2],
        ints[3],
        ints[4],
        ints[5],
        nan,
        nan.copy(),
        subject=np.fromiter((subjects.rank(k) for k in cols[6]), np.int64, n),
    )


# ---- hits: the anchors whose window reaches a level ----------------------------------------------


@dataclass
class Hits:
    """Triggered anchors of one rule: region, time and level rank of each, and their windows —
    as ranges [lo, hi) into `perm` (threshold, trend, repeat) or as explicit index sets (cluster)."""

    region: I64
    t: I64
    rank: I64
    lo: I64 | None = None
    hi: I64 | None = None
    perm: I64 | None = None
    sets: list[I64] | None = None

    def __len__(self) -> int:
        return len(self.region)

    def members(self, sel: I64) -> I64:
        """Indices (into the evaluated Events) of the union of the selected anchors' windows."""
        if self.sets is not None:
            parts = [self.sets[i] for i in sel]
            return np.unique(np.concatenate(parts)) if parts else np.zeros(0, np.int64)
        assert self.lo is not None and self.hi is not None and self.perm is not None
        diff = np.zeros(len(self.perm) + 1, np.int64)
        np.add.at(diff, self.lo[sel], 1)
        np.add.at(diff, self.hi[sel], -1)
        inside = np.cumsum(diff[:-1]) > 0
        return self.perm[inside]


def _ranks(spec: Spec, values: F64 | I64) -> I64:
    rank = np.zeros(len(values), np.int64)
    for level, need in spec.levels:
        rank[values >= need] = LEVEL_RANK[level]
    return rank


def _keyed(group: I64, t: I64) -> tuple[I64, I64]:
    """Sort by (group, time); returns the permutation and the sorted composite keys."""
    _, dense = np.unique(group, return_inverse=True)
    comp = dense.astype(np.int64) * SHIFT + t
    perm = np.argsort(comp, kind="stable")
    return perm, comp[perm]


def _windowed(spec: Spec, ev: Events, group: I64, region: I64, anchor: BOOL) -> Hits:
    perm, cs = _keyed(group, ev.t)
    pos = np.nonzero(anchor[perm])[0]
    hi = np.searchsorted(cs, cs[pos], side="right")
    lo = np.searchsorted(cs, cs[pos] - spec.window_s, side="right")
    if spec.kind == RuleKind.trend:
        prev_lo = np.searchsorted(cs, cs[pos] - 2 * spec.window_s, side="right")
        this, prev = hi - lo, lo - prev_lo
        growth = (this - prev) * 100.0 / np.maximum(prev, 1)
        rank = _ranks(spec, growth)
        rank[this < spec.min_count] = 0
    else:
        rank = _ranks(spec, hi - lo)
    hit = rank > 0
    idx = perm[pos[hit]]
    return Hits(region[idx], ev.t[idx], rank[hit], lo[hit], hi[hit], perm)


def haversine(lon1: F64, lat1: F64, lon2: F64, lat2: F64) -> F64:
    """Metres on the sphere (the same formula as events.service.distance_m, vectorised)."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dp, dl = p2 - p1, np.radians(lon2 - lon1)
    a = np.sin(dp / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    out: F64 = 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.minimum(a, 1.0)))
    return out


def degrees_for(radius_m: float, lat: float) -> float:
    """A distance in degrees that covers `radius_m` in every direction up to latitude `lat`."""
    return radius_m / (111_195.0 * max(np.cos(np.radians(min(abs(lat), 89.0))), 0.01)) * 1.01 + 1e-9


def _cluster(spec: Spec, ev: Events, anchor: BOOL) -> Hits:
    region = ev.column(spec.per or RegionLevel.village)
    anchors = np.nonzero(anchor)[0]
    if not len(anchors):
        none = np.zeros(0, np.int64)
        return Hits(none, none, none, sets=[])
    tree = shapely.STRtree(shapely.points(ev.lon, ev.lat))
    deg = degrees_for(spec.radius_m, float(np.max(np.abs(ev.lat))))
    q, j = tree.query(shapely.points(ev.lon[anchors], ev.lat[anchors]), predicate="dwithin", distance=deg)
    a = anchors[q]
    keep = (ev.t[j] <= ev.t[a]) & (ev.t[j] > ev.t[a] - spec.window_s)
    a, j, q = a[keep], j[keep], q[keep]
    keep = haversine(ev.lon[a], ev.lat[a], ev.lon[j], ev.lat[j]) <= spec.radius_m
    q, j = q[keep], j[keep]
    counts = np.bincount(q, minlength=len(anchors))
    rank = _ranks(spec, counts)
    hit = np.nonzero(rank > 0)[0]
    order = np.argsort(q, kind="stable")
    q, j = q[order], j[order]
    starts = np.searchsorted(q, hit, side="left")
    ends = np.searchsorted(q, hit, side="right")
    idx = anchors[hit]
    return Hits(region[idx], ev.t[idx], rank[hit], sets=[j[s:e] for s, e in zip(starts, ends, strict=True)])


def hits(spec: Spec, ev: Events, anchor: BOOL) -> Hits:
    """The triggered anchors of `spec` among `ev`; `anchor` marks which rows may be anchors."""
    if spec.kind == RuleKind.cluster:
        return _cluster(spec, ev, anchor)
    region = ev.column(spec.per or RegionLevel.township)
    if spec.kind == RuleKind.repeat:
        valid = ev.subject >= 0
        return _windowed(spec, ev, np.where(valid, ev.subject, -1), region, anchor & valid)
    return _windowed(spec, ev, region, region, anchor)


# ---- findings and episodes -----------------------------------------------------------------


@dataclass
class Finding:
    """What a rule says about one region: its level and the evidence behind it."""

    region_id: int
    level: WarningLevel
    evidence: list[tuple[str, int]]
    first_t: int = 0
    last_t: int = 0
    samples: list[str] = field(default_factory=list)  # dry runs of data rules: row summaries


def _evidence(ev: Events, members: I64) -> list[tuple[str, int]]:
    return sorted(
        {(SOURCE_NAMES[int(s)], int(i)) for s, i in zip(ev.src[members], ev.id[members], strict=True)}
    )


def findings(ev: Events, h: Hits) -> list[Finding]:
    """Per region: the union of the hits' windows at the highest level reached."""
    out = []
    for region in np.unique(h.region):
        sel = np.nonzero(h.region == region)[0]
        out.append(
            Finding(
                int(region),
                RANK_LEVEL[int(h.rank[sel].max())],
                _evidence(ev, h.members(sel)),
                int(h.t[sel].min()),
                int(h.t[sel].max()),
            )
        )
    return out


def episodes(ev: Events, h: Hits, gap_s: int) -> list[Finding]:
    """The warnings a rule would have raised over history: per region, hits closer than `gap_s`
    to the previous one belong to the same warning (it would still have been open)."""
    out = []
    for region in np.unique(h.region):
        sel = np.nonzero(h.region == region)[0]
        sel = sel[np.argsort(h.t[sel], kind="stable")]
        breaks = np.nonzero(np.diff(h.t[sel]) > gap_s)[0] + 1
        for part in np.split(sel, breaks):
            out.append(
                Finding(
                    int(region),
                    RANK_LEVEL[int(h.rank[part].max())],
                    _evidence(ev, h.members(part)),
                    int(h.t[part].min()),
                    int(h.t[part].max()),
                )
            )
    out.sort(key=lambda f: (f.first_t, f.region_id))
    return out


# ---- which events a rule watches -------------------------------------------------------------------


@dataclass(frozen=True)
class Scope:
    """The rule's region subtree as an equality on one region column (or everything)."""

    column: str | None
    ids: frozenset[int]

    def mask(self, ev: Events) -> BOOL:
        if self.column is None:
            return np.ones(len(ev), np.bool_)
        return np.isin(ev.column(self.column), _array(self.ids))

    def sql(self) -> list[ColumnElement[bool]]:
        if self.column is None:
            return []
        col = getattr(Event, f"{self.column}_id")
        return [col.in_(sorted(self.ids))]

    def sql_for(self, model: Any) -> list[ColumnElement[bool]]:
        if self.column is None:
            return []
        return [getattr(model, f"{self.column}_id").in_(sorted(self.ids))]


def scope_for(session: Session, region: Region) -> Scope:
    level = RegionLevel(region.level)
    if level == RegionLevel.city:
        roots = session.scalar(select(func.count(Region.id)).where(Region.parent_id.is_(None)))
        if region.parent_id is None and roots == 1:
            return Scope(None, frozenset())
        counties = session.scalars(select(Region.id).where(Region.parent_id == region.id))
        return Scope("county", frozenset(counties))
    return Scope(str(level), frozenset({region.id}))


_ARRAY_CACHE: dict[frozenset[int], I64] = {}


def _array(ids: frozenset[int]) -> I64:
    arr = _ARRAY_CACHE.get(ids)
    if arr is None:
        if len(_ARRAY_CACHE) > 5000:
            _ARRAY_CACHE.clear()
        arr = _ARRAY_CACHE[ids] = np.fromiter(sorted(ids), np.int64, len(ids))
    return arr


def rule_mask(spec: Spec, scope: Scope, ev: Events) -> BOOL:
    """Rows the rule watches: its categories (disputes have none and always pass) and region."""
    if len(ev) <= 8:  # the incremental run's usual case: plain set look-ups beat numpy's setup
        col = ev.column(scope.column) if scope.column else None
        cats = spec.category_ids
        return np.fromiter(
            (
                (cats is None or int(ev.src[i]) != EVENT or int(ev.category[i]) in cats)
                and (col is None or int(col[i]) in scope.ids)
                for i in range(len(ev))
            ),
            np.bool_,
            len(ev),
        )
    mask = scope.mask(ev)
    if spec.category_ids is not None:
        mask &= (ev.src != EVENT) | np.isin(ev.category, _array(spec.category_ids))
    return mask


def category_sql(spec: Spec) -> list[ColumnElement[bool]]:
    return [Event.category_id.in_(sorted(spec.category_ids))] if spec.category_ids is not None else []


# ---- evaluating one rule over a period (full pass, dry run) -----------------------------------------


def rule_events(
    session: Session, spec: Spec, scope: Scope, since: datetime, until: datetime | None = None
) -> Events:
    """Every event (and dispute) the rule watches with time in [since, until)."""
    where = [Event.reported_at >= since, *category_sql(spec), *scope.sql()]
    if until is not None:
        where.append(Event.reported_at < until)
    subjects = Subjects()
    subject = spec.key if spec.kind == RuleKind.repeat else ""
    if subject:
        where.append(has_subject(subject))
    ev = load_events(session, *where, subject=subject, subjects=subjects)
    if spec.kind == RuleKind.repeat and spec.include_disputes:
        ev = Events.concat([ev, _disputes(session, spec, scope, since, until, subjects)])
    return ev


def _disputes(
    session: Session, spec: Spec, scope: Scope, since: datetime, until: datetime | None, subjects: Subjects
) -> Events:
    try:
        from civicgrid.disputes.models import Dispute
    except ImportError:
        return empty_events()
    where = [Dispute.registered_at >= since, *scope.sql_for(Dispute)]
    if until is not None:
        where.append(Dispute.registered_at < until)
    return dispute_parts(session, *where, subject=spec.key, subjects=subjects)


def evaluate_now(
    session: Session, spec: Spec, scope: Scope, now: datetime, ev: Events | None = None
) -> list[Finding]:
    """The rule's live findings at `now`: anchors within one window before now (or later)."""
    if spec.kind not in (RuleKind.threshold, RuleKind.cluster, RuleKind.trend, RuleKind.repeat):
        return []
    since = now - timedelta(seconds=spec.horizon_s + spec.lookback_s)
    if ev is None:
        ev = rule_events(session, spec, scope, since)
    else:
        keep = rule_mask(spec, scope, ev) & (ev.t > to_unix(since))
        if spec.kind == RuleKind.repeat and not spec.include_disputes:
            keep &= ev.src == EVENT
        ev = ev.take(keep)
    anchor = ev.t > to_unix(now) - spec.horizon_s
    return findings(ev, hits(spec, ev, anchor))


def subject_events(session: Session, key: str, since: datetime, disputes: bool, least: int = 1) -> Events:
    """Every event (and, when asked, dispute) since `since` whose address or party occurs at least
    `least` times there: one read shared by all repeat rules of that key in the full pass. A
    subject seen fewer times than every rule's trigger cannot fire, so its events are counted
    from a narrow read (id and text) and only the others are read whole."""
    subjects = Subjects()
    parts = empty_events()
    if disputes:
        try:
            from civicgrid.disputes.models import Dispute
        except ImportError:
            pass
        else:
            parts = dispute_parts(session, Dispute.registered_at >= since, subject=key, subjects=subjects)
    scan = run(
        session, prepared(session, f"subject_scan:{key}", _subject_scan_stmt, key), {"since": since}
    ).all()
    n = len(scan)
    rank_text = subjects.rank_text
    ids = np.fromiter((r[0] for r in scan), np.int64, n)
    ranks = np.fromiter((rank_text(key, r[1]) for r in scan), np.int64, n)
    known = np.concatenate([ranks, parts.subject])
    counts = np.bincount(known[known >= 0], minlength=len(subjects.keys) + 1)
    keep = (ranks >= 0) & (counts[np.maximum(ranks, 0)] >= least)
    wanted, wanted_ranks = ids[keep], ranks[keep]
    rows: list[Any] = []
    stmt = prepared(
        session, "by_ids", lambda: event_stmt(session, Event.id.in_(bindparam("ids", expanding=True)))
    )
    for start in range(0, len(wanted), 1000):
        rows += run(session, stmt, {"ids": wanted[start : start + 1000].tolist()}).all()
    ev = _events_of(rows)
    order = np.argsort(wanted, kind="stable")
    ev.subject = wanted_ranks[order][np.searchsorted(wanted[order], ev.id)] if len(ev) else ev.subject
    return Events.concat([ev, parts]) if len(parts) else ev


def _subject_scan_stmt(kind: str) -> Any:
    column = Event.address if kind == "address" else Event.reporter_phone
    return select(Event.id, column).where(
        Event.reported_at >= bindparam("since"), Event.state.not_in(EXCLUDED_STATES), has_subject(kind)
    )


def dry_run(session: Session, spec: Spec, scope: Scope, start: datetime, end: datetime) -> list[Finding]:
    """The warnings the rule would have raised for anchors in [start, end)."""
    ev = rule_events(session, spec, scope, start - timedelta(seconds=spec.lookback_s), end)
    anchor = ev.t >= to_unix(start)
    return episodes(ev, hits(spec, ev, anchor), spec.horizon_s)


# ---- incremental: the anchors a new event can change ---------------------------------------------


@dataclass(frozen=True)
class Watch:
    """An active rule as the incremental run sees it."""

    key: Any  # the rule's id
    spec: Spec
    scope: Scope


class RuleIndex:
    """Active rules by the event categories they watch, so a new event is checked only against
    the rules that could match it (a rule without categories watches every event)."""

    def __init__(self, watches: Sequence[Watch]) -> None:
        self.watches = list(watches)
        self.position = {w.key: i for i, w in enumerate(self.watches)}
        self.any_category = [w for w in self.watches if w.spec.category_ids is None]
        self.by_category: dict[int, list[Watch]] = {}
        for w in self.watches:
            for c in w.spec.category_ids or ():
                self.by_category.setdefault(c, []).append(w)

    def candidates(self, categories: Iterable[int]) -> list[Watch]:
        """The rules watching any of `categories`, in the order they were given."""
        found = {w.key: w for w in self.any_category}
        for c in categories:
            for w in self.by_category.get(int(c), ()):
                found[w.key] = w
        return sorted(found.values(), key=lambda w: self.position[w.key])


def incremental(
    session: Session,
    watches: Sequence[Watch] | RuleIndex,
    new: Events,
    now: datetime,
    subject_keys: dict[tuple[int, int], dict[str, str]] | None = None,
) -> dict[Any, list[Finding]]:
    """Findings of the windows that contain one of the `new` events, per rule. Each rule looks
    only at the new events it watches (categories, region), and candidates are read once for all
    rules sharing a place: per township (threshold, trend), around each point (cluster), per
    subject (repeat) — a few rows each, through the township-leading event index or the subject
    index. `subject_keys` maps (source, id) of each new row to its {"address": key, "party": key}."""
    now_s = to_unix(now)
    out: dict[Any, list[Finding]] = {}
    if isinstance(watches, RuleIndex):
        watches = watches.candidates(np.unique(new.category[new.src == EVENT]).tolist())
    relevant: list[tuple[Watch, I64]] = []
    for w in watches:
        live = new.t + w.spec.reach_s > now_s - w.spec.horizon_s  # older events change nothing live
        rows = np.nonzero(rule_mask(w.spec, w.scope, new) & live)[0]
        if len(rows):
            relevant.append((w, rows))
    regional = [(w, r) for w, r in relevant if w.spec.kind in (RuleKind.threshold, RuleKind.trend)]
    clusters = [(w, r) for w, r in relevant if w.spec.kind == RuleKind.cluster]
    repeats = [(w, r) for w, r in relevant if w.spec.kind == RuleKind.repeat]
    if regional:
        _regions(session, regional, new, now_s, out)
    if clusters:
        _clusters(session, clusters, new, now_s, out)
    if repeats:
        _repeats(session, repeats, new, now_s, subject_keys or {}, out)
    return out


def least(spec: Spec) -> int:
    """The fewest events a window needs to reach the rule's lowest level (a trend its minimum
    count): fewer candidates than this cannot fire, whatever their times and places."""
    need = spec.min_count if spec.kind == RuleKind.trend else spec.trigger
    return max(math.ceil(need), 1) if math.isfinite(need) else 1 << 62


def _anchor_mask(ev: Events, starts: I64, reach: int, now_s: int, horizon: int) -> BOOL:
    """Rows that lie in [s, s + reach) for some new event time s, and inside the horizon."""
    starts = np.sort(starts)
    k = np.searchsorted(starts, ev.t, side="right") - 1  # the latest new event at or before t
    ok = k >= 0
    ok[ok] = ev.t[ok] < starts[k[ok]] + reach
    return ok & (ev.t > now_s - horizon)


def _categories_of(watches: Iterable[Watch]) -> list[ColumnElement[bool]]:
    cats: set[int] = set()
    for w in watches:
        if w.spec.category_ids is None:
            return []
        cats |= w.spec.category_ids
    return [Event.category_id.in_(sorted(cats))]


def _category_ids(watches: Iterable[Watch]) -> list[int] | None:
    cats: set[int] = set()
    for w in watches:
        if w.spec.category_ids is None:
            return None
        cats |= w.spec.category_ids
    return sorted(cats)


def one_of(dialect: str, column: Any, name: str) -> ColumnElement[bool]:
    """`column IN (:name…)`; on PostgreSQL `= ANY(:name)`, one statement text whatever the list's
    length, so the driver prepares it once and the server plans it once."""
    if dialect == "postgresql":
        return column == any_(bindparam(name, type_=ARRAY(Integer)))
    result: ColumnElement[bool] = column.in_(bindparam(name, expanding=True))
    return result


def _unit_stmt(session: Session, level: str, cats: list[int] | None, count: bool) -> Any:
    """The candidates of a township (or a county's townships) in a time range, as a count or rows."""
    dialect = session.get_bind().dialect.name
    where = [
        one_of(dialect, Event.township_id, "towns")
        if level == "county"
        else Event.township_id == bindparam("town"),
        Event.reported_at > bindparam("lo"),
        Event.reported_at < bindparam("hi"),
    ]
    if cats is not None:
        where.append(one_of(dialect, Event.category_id, "cats"))
    if count:
        return select(func.count()).select_from(Event).where(Event.state.not_in(EXCLUDED_STATES), *where)
    if level == "county":
        where.append(Event.county_id == bindparam("county"))
    return event_stmt(session, *where)


def _bound_stmt(dialect: str, level: str, shapes: tuple[tuple[bool, str], ...]) -> Any:
    """Per member rule, how many of its events lie anywhere in its candidate range (an upper bound
    of every window it could count): one scan of the unit's covering index range for all rules.
    `shapes`: per rule (has categories, region column the rule counts per)."""
    cases = []
    for i, (has_cats, per) in enumerate(shapes):
        cond = [Event.reported_at > bindparam(f"lo{i}"), Event.reported_at < bindparam(f"hi{i}")]
        if has_cats:
            cond.append(one_of(dialect, Event.category_id, f"cats{i}"))
        if per in ("village", "grid"):
            cond.append(one_of(dialect, getattr(Event, f"{per}_id"), f"regions{i}"))
        cases.append(func.coalesce(func.sum(case((and_(*cond), 1), else_=0)), 0))
    where = [
        one_of(dialect, Event.township_id, "towns")
        if level == "county"
        else Event.township_id == bindparam("town"),
        Event.reported_at > bindparam("lo"),
        Event.reported_at < bindparam("hi"),
        Event.state.not_in(EXCLUDED_STATES),
    ]
    return select(*cases).select_from(Event).where(*where)


BOUND_RULES = 4  # up to this many rules in a unit get a count each; more (a batch) share one


def _bounds(
    session: Session,
    level: str,
    unit_params: dict[str, Any],
    members: list[tuple[Watch, I64]],
    ranges: list[tuple[int, int]],
    new: Events,
) -> list[int]:
    """Per member rule, an upper bound of any window it could count, from the covering index
    alone (no event row is read): a rule whose bound stays below its lowest trigger cannot fire.
    A few rules (a new event's usual case) get their own count (their categories, the regions they
    count per, their range) from one statement; many rules (a batch) share one count over all
    their categories and the widest range, as the statement for every combination would have to be
    compiled anew."""
    dialect = session.get_bind().dialect.name
    if len(members) > BOUND_RULES:
        cats = _category_ids(w for w, _r in members)
        params = {
            **unit_params,
            "lo": from_unix(min(lo for lo, _hi in ranges)),
            "hi": from_unix(max(hi for _lo, hi in ranges) + 1),
        }
        if cats is not None:
            params["cats"] = cats
        shape = f"{level}:{'cats' if cats is not None else 'all'}"
        total = int(
            run(
                session, prepared(session, f"count:{shape}", _unit_stmt, session, level, cats, True), params
            ).scalar()
            or 0
        )
        return [total] * len(members)
    # Slots in a canonical order, so each combination of shapes is one statement.
    shape_of = [
        (w.spec.category_ids is not None, str(w.spec.per or RegionLevel.township)) for w, _rows in members
    ]
    order = sorted(range(len(members)), key=lambda i: shape_of[i])
    params = dict(unit_params)
    for slot, i in enumerate(order):
        (w, rows), (lo, hi) = members[i], ranges[i]
        params[f"lo{slot}"], params[f"hi{slot}"] = from_unix(lo), from_unix(hi + 1)
        if w.spec.category_ids is not None:
            params[f"cats{slot}"] = sorted(w.spec.category_ids)
        per = shape_of[i][1]
        if per in ("village", "grid"):
            params[f"regions{slot}"] = np.unique(new.column(per)[rows]).tolist()
    params["lo"] = from_unix(min(lo for lo, _hi in ranges))
    params["hi"] = from_unix(max(hi for _lo, hi in ranges) + 1)
    shapes = tuple(shape_of[i] for i in order)
    key = f"bound:{level}:" + ",".join(f"{int(c)}{p}" for c, p in shapes)
    row = run(session, prepared(session, key, _bound_stmt, dialect, level, shapes), params).one()
    out = [0] * len(members)
    for slot, i in enumerate(order):
        out[i] = int(row[slot] or 0)
    return out


def _regions(
    session: Session, items: list[tuple[Watch, I64]], new: Events, now_s: int, out: dict[Any, list[Finding]]
) -> None:
    """Threshold and trend rules: one read per township (per county for county-wide rules) of
    the new events, shared by every rule watching it; each rule then counts its own windows."""
    _grid_town, county_towns = _town_maps(session)
    units: dict[tuple[str, int], list[tuple[Watch, I64]]] = {}
    for w, rows in items:
        level = "county" if w.spec.per == RegionLevel.county else "township"
        col = new.county if level == "county" else new.township
        for unit in np.unique(col[rows]):
            units.setdefault((level, int(unit)), []).append((w, rows[col[rows] == unit]))
    for (level, unit), members in units.items():
        unit_params: dict[str, Any] = {}
        if level == "county":
            unit_params["towns"] = county_towns.get(unit, []) or [-1]
        else:
            unit_params["town"] = unit
        ranges = [
            (int(new.t[rows].min()) - w.spec.lookback_s, int(new.t[rows].max()) + w.spec.reach_s)
            for w, rows in members
        ]
        counts = _bounds(session, level, unit_params, members, ranges, new)
        live = [(m, r) for m, r, n in zip(members, ranges, counts, strict=True) if n >= least(m[0].spec)]
        if not live:
            continue
        members = [m for m, _r in live]
        cats = _category_ids(w for w, _r in members)
        params: dict[str, Any] = {
            **unit_params,
            "lo": from_unix(min(r[0] for _m, r in live)),
            "hi": from_unix(max(r[1] for _m, r in live) + 1),
        }
        if level == "county":
            params["county"] = unit
        if cats is not None:
            params["cats"] = cats
        shape = f"{level}:{'cats' if cats is not None else 'all'}"
        candidates = run(
            session, prepared(session, f"load:{shape}", _unit_stmt, session, level, cats, False), params
        ).all()
        ev = _events_of(candidates)
        for w, rows in members:
            spec = w.spec
            keep = rule_mask(spec, w.scope, ev)
            if int(keep.sum()) < least(spec):
                continue
            mine = ev.take(keep)
            per = spec.per or RegionLevel.township
            regions = new.column(per)[rows]
            for region in np.unique(regions):
                starts = new.t[rows][regions == region]
                anchor = _anchor_mask(mine, starts, spec.reach_s, now_s, spec.horizon_s)
                anchor &= mine.column(per) == region
                out.setdefault(w.key, []).extend(findings(mine, hits(spec, mine, anchor)))


def _near_stmt(session: Session, cats: list[int] | None) -> Any:
    dialect = session.get_bind().dialect.name
    where = [
        one_of(dialect, Event.township_id, "towns"),
        one_of(dialect, Event.grid_id, "grids"),
        Event.lat.between(bindparam("lat_lo"), bindparam("lat_hi")),
        Event.lon.between(bindparam("lon_lo"), bindparam("lon_hi")),
        Event.reported_at > bindparam("lo"),
        Event.reported_at < bindparam("hi"),
    ]
    if cats is not None:
        where.append(one_of(dialect, Event.category_id, "cats"))
    return event_stmt(session, *where)


def _clusters(
    session: Session, items: list[tuple[Watch, I64]], new: Events, now_s: int, out: dict[Any, list[Finding]]
) -> None:
    """Cluster rules: one read around each new point (the widest radius and window of the rules
    watching it), through the grids near the point and their townships."""
    grid_town, _county_towns = _town_maps(session)
    by_row: dict[int, list[Watch]] = {}
    for w, rows in items:
        for i in rows:
            by_row.setdefault(int(i), []).append(w)
    for i, watches in by_row.items():
        lon, lat, t = float(new.lon[i]), float(new.lat[i]), int(new.t[i])
        radius = max(w.spec.radius_m for w in watches)
        window = max(w.spec.window_s for w in watches)
        dlon = degrees_for(2 * radius, lat)
        dlat = 2 * radius / 111_195.0 * 1.01 + 1e-9
        grids = _grids_near(session, lon, lat, dlon, dlat)
        if not grids:
            continue
        towns = sorted({grid_town[g] for g in grids if g in grid_town})
        cats = _category_ids(watches)
        params: dict[str, Any] = {
            "towns": towns or [-1],
            "grids": grids,
            "lat_lo": lat - dlat,
            "lat_hi": lat + dlat,
            "lon_lo": lon - dlon,
            "lon_hi": lon + dlon,
            "lo": from_unix(t - window),
            "hi": from_unix(t + window + 1),
        }
        if cats is not None:
            params["cats"] = cats
        name = f"near:{'cats' if cats is not None else 'all'}"
        ev = _events_of(run(session, prepared(session, name, _near_stmt, session, cats), params).all())
        for w in watches:
            spec = w.spec
            keep = rule_mask(spec, w.scope, ev)
            if int(keep.sum()) < least(spec):
                continue
            mine = ev.take(keep)
            dist = haversine(np.full(len(mine), lon), np.full(len(mine), lat), mine.lon, mine.lat)
            anchor = (dist <= spec.radius_m) & (mine.t >= t) & (mine.t < t + spec.window_s)
            anchor &= mine.t > now_s - spec.horizon_s
            out.setdefault(w.key, []).extend(findings(mine, hits(spec, mine, anchor)))


def _subject_stmt(session: Session, kind: str) -> Any:
    """Rows of the subject index for one key in a time range, with their events' columns (NULL
    for disputes and for merged or rejected events): one read per key."""
    from civicgrid.risks.models import Subject

    base = event_stmt(session, subject=kind)
    ev = base.subquery()
    return (
        select(Subject.source, Subject.ref_id, *ev.c)
        .select_from(Subject)
        .outerjoin(ev, (Subject.source == "event") & (ev.c.id == Subject.ref_id))
        .where(
            Subject.kind == bindparam("kind"),
            Subject.key == bindparam("key"),
            Subject.at > bindparam("lo"),
            Subject.at < bindparam("hi"),
        )
    )


def _repeats(
    session: Session,
    items: list[tuple[Watch, I64]],
    new: Events,
    now_s: int,
    subject_keys: dict[tuple[int, int], dict[str, str]],
    out: dict[Any, list[Finding]],
) -> None:
    """Repeat rules: per new event and subject kind, the rows sharing its key from the subject
    index (over the widest window of the rules), read once for every rule of that kind."""

    groups: dict[tuple[int, str], list[Watch]] = {}
    for w, rows in items:
        for i in rows:
            groups.setdefault((int(i), w.spec.key), []).append(w)
    for (i, kind), watches in groups.items():
        key = subject_keys.get((int(new.src[i]), int(new.id[i])), {}).get(kind)
        if not key:
            continue
        t = int(new.t[i])
        window = max(w.spec.window_s for w in watches)
        linked = run(
            session,
            prepared(session, f"subject:{kind}", _subject_stmt, session, kind),
            {"kind": kind, "key": key, "lo": from_unix(t - window - 1), "hi": from_unix(t + window + 1)},
        ).all()
        subjects = Subjects()
        parts = [_events_of([r[2:] for r in linked if r[0] == "event" and r[2] is not None], kind, subjects)]
        dispute_ids = sorted({int(r[1]) for r in linked if r[0] == "dispute"})
        if dispute_ids and any(w.spec.include_disputes for w in watches):
            from civicgrid.disputes.models import Dispute

            parts.append(dispute_parts(session, Dispute.id.in_(dispute_ids), subject=kind, subjects=subjects))
        ev = Events.concat(parts)
        ev = ev.take(ev.subject == subjects.keys.get(key, -3))
        for w in watches:
            spec = w.spec
            keep = rule_mask(spec, w.scope, ev)
            if not spec.include_disputes:
                keep &= ev.src == EVENT
            if int(keep.sum()) < least(spec):
                continue
            mine = ev.take(keep)
            anchor = (mine.t >= t) & (mine.t < t + spec.window_s) & (mine.t > now_s - spec.horizon_s)
            out.setdefault(w.key, []).extend(findings(mine, hits(spec, mine, anchor)))


def merge(found: Iterable[Finding]) -> list[Finding]:
    """Findings of one rule merged per region (union of evidence, highest level)."""
    by: dict[int, Finding] = {}
    for f in found:
        cur = by.get(f.region_id)
        if cur is None:
            by[f.region_id] = Finding(f.region_id, f.level, list(f.evidence), f.first_t, f.last_t)
            continue
        if LEVEL_RANK[f.level] > LEVEL_RANK[cur.level]:
            cur.level = f.level
        cur.evidence = sorted(set(cur.evidence) | set(f.evidence))
        cur.first_t = min(cur.first_t, f.first_t)
        cur.last_t = max(cur.last_t, f.last_t)
    return [by[k] for k in sorted(by)]
