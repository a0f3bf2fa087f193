"""The one time parser: RFC 3339 in, aware UTC out; no offset means UTC; a bounded range."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyfob.clock import EARLIEST, END, BadTime, in_range, isoformat, parse_iso

quick = settings(max_examples=200, deadline=None)

offsets = st.integers(-(23 * 60 + 59), 23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m)))
# Naive datetimes whose UTC reading is inside the range, whatever offset is added to them.
naive_in_range = st.datetimes(
    min_value=datetime(1970, 1, 2), max_value=datetime(9998, 12, 30, 23, 59, 59, 999999)
)


def rfc3339(moment: datetime) -> str:
    """``moment`` written with its own offset, the way another program would send it."""
    return moment.isoformat(timespec="microseconds")


@quick
@given(naive=naive_in_range, zone=offsets)
def test_what_isoformat_writes_parses_back_to_the_same_moment(naive: datetime, zone: timezone):
    moment = naive.replace(tzinfo=zone)

    parsed = parse_iso(rfc3339(moment))

    assert parsed == moment
    assert parsed.tzinfo is UTC
    assert parse_iso(isoformat(moment)) == moment
    assert isoformat(parse_iso(isoformat(moment))) == isoformat(moment)


@quick
@given(naive=naive_in_range)
def test_a_time_without_an_offset_is_utc(naive: datetime):
    as_utc = naive.replace(tzinfo=UTC)

    assert parse_iso(naive.isoformat()) == as_utc
    assert parse_iso(naive.isoformat(sep=" ")) == as_utc
    assert parse_iso(rfc3339(naive) + "Z") == as_utc
    assert isoformat(naive) == isoformat(as_utc)
    # What an HTML datetime-local input sends: minutes only, or a date alone.
    assert parse_iso(naive.strftime("%Y-%m-%dT%H:%M")) == as_utc.replace(second=0, microsecond=0)
    assert parse_iso(naive.strftime("%Y-%m-%d")) == datetime(
        naive.year, naive.month, naive.day, tzinfo=UTC
    )


@pytest.fixture
def far_from_utc() -> Iterator[None]:
    """The server's local zone set 14 hours away from UTC (the old parser used it)."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = "Pacific/Kiritimati"
    time.tzset()
    try:
        yield
    finally:
        if before is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = before
        time.tzset()


@pytest.mark.usefixtures("far_from_utc")
def test_the_servers_local_zone_does_not_matter():
    naive = datetime(2026, 6, 1, 12, 0)

    assert parse_iso("2026-06-01T12:00:00") == naive.replace(tzinfo=UTC)
    assert parse_iso("2026-06-01T12:00") == naive.replace(tzinfo=UTC)
    assert isoformat(naive) == "2026-06-01T12:00:00.000000Z"
    assert in_range(naive) == naive.replace(tzinfo=UTC)


@quick
@given(
    moment=st.one_of(
        st.datetimes(max_value=datetime(1969, 12, 31, 23, 59, 59, 999999)),
        st.datetimes(min_value=datetime(9999, 1, 1)),
    ),
    zone=offsets,
)
def test_a_time_outside_1970_to_9998_is_refused(moment: datetime, zone: timezone):
    # Shifted by its offset the moment may land back in range; the ones that stay out
    # (or overflow a datetime altogether) must be refused, never crash.
    text = rfc3339(moment.replace(tzinfo=zone))
    try:
        utc = moment.replace(tzinfo=zone).astimezone(UTC)
        inside = EARLIEST <= utc < END
    except OverflowError:
        inside = False

    if inside:
        assert parse_iso(text) == moment.replace(tzinfo=zone)
    else:
        with pytest.raises(BadTime, match="between 1970"):
            parse_iso(text)
        with pytest.raises(BadTime, match="between 1970"):
            in_range(moment.replace(tzinfo=zone))
    with pytest.raises(BadTime, match="between 1970"):
        parse_iso(rfc3339(moment))


@pytest.mark.parametrize(
    "text",
    [
        "9999-12-31T23:59:59-01:00",  # past datetime.max once in UTC
        "0001-01-01T00:00:00+01:00",  # before datetime.min once in UTC
        "0000-01-01T00:00:00Z",
        "1969-12-31T23:59:59.999999Z",
        "9999-01-01T00:00:00Z",
    ],
)
def test_edges_and_overflows_are_refused_clearly(text: str):
    with pytest.raises(BadTime, match="between 1970-01-01T00:00:00Z and 9998-12-31T23:59:59Z"):
        parse_iso(text)


def test_the_ends_of_the_range_are_taken():
    assert parse_iso("1970-01-01T00:00:00Z") == EARLIEST
    assert parse_iso("9998-12-31T23:59:59.999999Z") == END - timedelta(microseconds=1)
    assert parse_iso("9999-12-31T23:59:59.999999Z", bounded=False).year == 9999


@pytest.mark.parametrize(
    "text",
    [
        "",
        "yesterday",
        "2026-02-30T00:00:00Z",
        "2026-12-01T24:00:00Z",
        "2026-12-01T10:00:60Z",
        "2026-12-01T10:00:00+24:00",
        "2026-12-01Z",
        "2026-W48-1",
        "20261201T100000Z",
        "\uff12\uff10\uff12\uff16-12-01",  # fullwidth digits
        "2026-12-01T10:00:00Z trailing",
    ],
)
def test_what_is_not_a_time_is_refused_without_echoing_it(text: str):
    with pytest.raises(BadTime) as caught:
        parse_iso(text)

    assert "such as 2026-12-01T10:00:00Z" in str(caught.value)
    assert text.strip() not in str(caught.value) or not text.strip()


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=40) | st.from_regex(r"[0-9]{4}-[0-9]{2}-[0-9]{2}.{0,20}"))
def test_any_text_is_a_time_in_range_or_bad_time(text: str):
    try:
        moment = parse_iso(text)
    except BadTime:
        return
    assert moment.tzinfo is UTC
    assert EARLIEST <= moment < END
