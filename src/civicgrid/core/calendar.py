"""Working time: deadlines counted in working hours and days, with public holidays and
make-up working days (调休) as data (`data/calendar-cn.json`, editable per installation).

Conventions (docs/decisions.md): N working hours run only inside working periods; N working
days end at the close of the Nth working day after the day the clock starts (that day is
not counted, as in "自受理之日起N个工作日内").
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from pathlib import Path
from zoneinfo import ZoneInfo

DATA = Path(__file__).resolve().parent / "data" / "calendar-cn.json"
MAX_DAYS = 3 * 366  # a deadline further out than this is a data error, not a wait


@dataclass(frozen=True)
class WorkCalendar:
    off: frozenset[date]
    work: frozenset[date]  # weekend days that are working days (调休上班)
    periods: tuple[tuple[time, time], ...]
    tz: ZoneInfo

    def is_workday(self, d: date) -> bool:
        if d in self.work:
            return True
        if d in self.off:
            return False
        return d.weekday() < 5

    def with_periods(self, periods: Iterable[tuple[time, time]]) -> WorkCalendar:
        """The same days with an org's own working hours."""
        return replace(self, periods=_check_periods(tuple(periods)))

    def _windows(self, start: datetime) -> Iterable[tuple[datetime, datetime]]:
        """Working windows (local time) from `start` on, in order."""
        local = start.astimezone(self.tz)
        d = local.date()
        for _ in range(MAX_DAYS):
            if self.is_workday(d):
                for ps, pe in self.periods:
                    s = datetime.combine(d, ps, self.tz)
                    e = datetime.combine(d, pe, self.tz)
                    if e > local:
                        yield max(s, local), e
            d += timedelta(days=1)
        raise ValueError("no working time within three years: the calendar data is wrong")

    def add_working_hours(self, start: datetime, hours: float) -> datetime:
        remaining = timedelta(hours=hours)
        if remaining <= timedelta(0):
            return start
        for s, e in self._windows(start):
            if remaining <= e - s:
                return (s + remaining).astimezone(UTC)
            remaining -= e - s
        raise AssertionError("unreachable")

    def add_working_days(self, start: datetime, days: int) -> datetime:
        d = start.astimezone(self.tz).date()
        counted = 0
        for _ in range(MAX_DAYS):
            d += timedelta(days=1)
            if self.is_workday(d):
                counted += 1
                if counted >= days:
                    return datetime.combine(d, self.periods[-1][1], self.tz).astimezone(UTC)
        raise ValueError("no working day within three years: the calendar data is wrong")

    def working_hours_between(self, start: datetime, end: datetime) -> float:
        """Working hours elapsed from start to end (0 when end is not after start)."""
        if end <= start:
            return 0.0
        total = timedelta(0)
        for s, e in self._windows(start):
            if s >= end:
                break
            total += min(e, end) - s
        return total.total_seconds() / 3600


def _parse_time(text: str) -> time:
    h, m = text.split(":")
    return time(int(h), int(m))


def _check_periods(periods: tuple[tuple[time, time], ...]) -> tuple[tuple[time, time], ...]:
    if not periods:
        raise ValueError("at least one working period is needed")
    prev = time(0, 0)
    for s, e in periods:
        if not (prev <= s < e):
            raise ValueError("working periods must be ordered and must not overlap")
        prev = e
    return periods


def build_calendar(
    days: Iterable[tuple[date, str]] = (),
    periods: Iterable[tuple[time, time]] | None = None,
    timezone: str | None = None,
) -> WorkCalendar:
    """The shipped calendar, overridden by `days` ((date, "off" | "work") pairs, e.g. from the database)."""
    raw = json.loads(DATA.read_text(encoding="utf-8"))
    kinds: dict[date, str] = {}
    for year in raw["years"].values():
        for kind in ("off", "work"):
            for day, _name in year[kind]:
                kinds[date.fromisoformat(day)] = kind
    for d, kind in days:
        kinds[d] = kind
    shipped = tuple((_parse_time(a), _parse_time(b)) for a, b in raw["working_periods"])
    return WorkCalendar(
        off=frozenset(d for d, k in kinds.items() if k == "off"),
        work=frozenset(d for d, k in kinds.items() if k == "work"),
        periods=_check_periods(tuple(periods) if periods is not None else shipped),
        tz=ZoneInfo(timezone or raw["timezone"]),
    )


@lru_cache
def default_calendar() -> WorkCalendar:
    return build_calendar()


def local_today(at: datetime | None = None) -> date:
    """The jurisdiction's calendar day now (or at `at`): periods, quotas and numbers turn over at
    local midnight, eight hours before UTC's — `utcnow().date()` is yesterday every evening."""
    return (at or datetime.now(UTC)).astimezone(default_calendar().tz).date()
