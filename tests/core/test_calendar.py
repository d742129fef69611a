from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from civicgrid.core.calendar import build_calendar, default_calendar

SH = ZoneInfo("Asia/Shanghai")
cal = default_calendar()


def at(y, m, d, hh=9, mm=0):
    return datetime(y, m, d, hh, mm, tzinfo=SH)


def test_holidays_and_make_up_days():
    assert not cal.is_workday(date(2026, 10, 1))  # 国庆
    assert not cal.is_workday(date(2026, 2, 17))  # 春节
    assert cal.is_workday(date(2026, 2, 14))  # Saturday, 调休上班
    assert cal.is_workday(date(2025, 1, 26))  # Sunday, 调休上班
    assert not cal.is_workday(date(2026, 11, 28))  # plain Saturday
    assert cal.is_workday(date(2026, 11, 25))


def test_working_hours_skip_lunch_night_and_weekend():
    # Friday 16:30 + 4 working hours: 1 h on Friday, then Monday 08:30 + 3 h = 11:30.
    due = cal.add_working_hours(at(2026, 11, 27, 16, 30), 4)
    assert due.astimezone(SH) == at(2026, 11, 30, 11, 30)
    # 11:00 + 2 h crosses lunch (12:00-13:30): 1 h before, 1 h after → 14:30.
    assert cal.add_working_hours(at(2026, 11, 25, 11), 2).astimezone(SH) == at(2026, 11, 25, 14, 30)
    # A report at night starts the clock next morning.
    assert cal.add_working_hours(at(2026, 11, 25, 22), 1).astimezone(SH) == at(2026, 11, 26, 9, 30)


def test_deadline_across_national_day_holiday():
    # Reported Tuesday 29 Sep 2026 at 16:00 with 8 working hours: 1.5 h that day, then
    # Wednesday 30 Sep gives the rest (6.5 h): due 30 Sep 16:30 — before the holiday.
    assert cal.add_working_hours(at(2026, 9, 29, 16), 8).astimezone(SH) == at(2026, 9, 30, 16, 30)
    # Reported 30 Sep 16:00, 8 working hours: 1.5 h on the 30th, the holiday 1-7 Oct is
    # skipped, Thursday 8 Oct gives the rest → 8 Oct 16:30.
    assert cal.add_working_hours(at(2026, 9, 30, 16), 8).astimezone(SH) == at(2026, 10, 8, 16, 30)
    # 5 working days from 30 Sep: 8, 9, 10 (Saturday, 调休上班), 12, 13 Oct → close of 13 Oct.
    assert cal.add_working_days(at(2026, 9, 30, 10), 5).astimezone(SH) == at(2026, 10, 13, 17, 30)


def test_spring_festival_2026():
    # Friday 13 Feb 17:00 + 2 working hours: 0.5 h, Saturday 14 Feb is a make-up working day.
    assert cal.add_working_hours(at(2026, 2, 13, 17), 2).astimezone(SH) == at(2026, 2, 14, 10, 0)
    # 1 working day after 14 Feb: 15-23 Feb off → Tuesday 24 Feb.
    assert cal.add_working_days(at(2026, 2, 14, 9), 1).astimezone(SH) == at(2026, 2, 24, 17, 30)


def test_working_hours_between_matches_add():
    start = at(2026, 9, 30, 16)
    end = cal.add_working_hours(start, 8)
    assert cal.working_hours_between(start, end) == pytest.approx(8)
    assert cal.working_hours_between(end, start) == 0


def test_database_days_and_org_periods_override():
    c = build_calendar(days=[(date(2026, 11, 25), "off")], periods=[(time(9), time(17))])
    assert not c.is_workday(date(2026, 11, 25))
    assert c.add_working_hours(at(2026, 11, 26, 16), 2).astimezone(SH) == at(2026, 11, 27, 10)
    with pytest.raises(ValueError):
        build_calendar(periods=[(time(14), time(12))])


@settings(max_examples=200, deadline=None)
@given(
    start=st.datetimes(min_value=datetime(2025, 1, 1), max_value=datetime(2026, 12, 31)),
    hours=st.floats(min_value=0.1, max_value=200),
)
def test_add_then_measure_round_trips(start, hours):
    s = start.replace(tzinfo=UTC)
    due = cal.add_working_hours(s, hours)
    assert due > s
    assert cal.working_hours_between(s, due) == pytest.approx(hours, abs=1e-6)
    assert cal.is_workday(due.astimezone(SH).date())
    assert due - s >= timedelta(hours=hours)
