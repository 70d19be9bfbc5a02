"""The overview's chart: bars stacked per hour and category, and the hours that are over kept a while."""

from __future__ import annotations

from provider_jobs.console.chart import HourlyCounts, hourly_chart

HOUR_MS = 3_600_000
NOW_MS = 1_000 * HOUR_MS + 1_234


def test_each_hour_stacks_its_categories_largest_category_first() -> None:
    rows = [(NOW_MS // HOUR_MS * HOUR_MS, "validation", 1), (NOW_MS // HOUR_MS * HOUR_MS, "timeout", 3)]
    chart = hourly_chart(rows, hours=24, now_ms=NOW_MS)
    assert [(c, total) for _, c, total in chart.legend] == [("timeout", 3), ("validation", 1)]
    timeout, validation = chart.bars
    assert timeout.y + timeout.height == chart.height - 20, "the first category sits on the axis"
    assert validation.y + validation.height == timeout.y, "the next one on top of it"
    assert timeout.height == 3 * validation.height
    assert (
        chart.summary
        == "4 dead letters in the last 24 hours: 3 timeout, 1 validation; the busiest hour had 4"
    )


def test_rows_outside_the_window_are_left_out() -> None:
    old = (NOW_MS // HOUR_MS - 24) * HOUR_MS
    chart = hourly_chart([(old, "timeout", 5)], hours=24, now_ms=NOW_MS)
    assert chart.bars == []
    assert chart.total == 0


def test_hours_that_are_over_are_read_once_within_their_time_and_the_last_two_every_time() -> None:
    calls: list[int] = []
    recent = (NOW_MS // HOUR_MS - 1) * HOUR_MS
    store = [(recent - 5 * HOUR_MS, "timeout", 2), (recent, "timeout", 1)]

    def counts_since(since_ms: int) -> list[tuple[int, str, int]]:
        calls.append(since_ms)
        return [row for row in store if row[0] >= since_ms]

    hourly = HourlyCounts(counts_since, ttl_s=60)
    assert hourly.rows(hours=24, now_ms=NOW_MS) == store
    store.append((recent + HOUR_MS, "validation", 4))
    assert hourly.rows(hours=24, now_ms=NOW_MS) == [*store]
    assert calls == [(NOW_MS // HOUR_MS - 23) * HOUR_MS, recent]
    hourly.ttl_s = 0
    hourly.rows(hours=24, now_ms=NOW_MS)
    assert calls[-1] == (NOW_MS // HOUR_MS - 23) * HOUR_MS, "read again once their time is up"
