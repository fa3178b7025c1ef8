"""Run ids sort in start order, also within one second (no-op runs take well under one)."""

from datetime import datetime, timedelta, timezone

from embcache.stages.run_record import RUN_ID_RE, new_run_id


def test_run_ids_sort_in_start_order_within_a_second():
    t = datetime(2026, 12, 4, 18, 16, 57, 900_000, tzinfo=timezone.utc)
    ids = [new_run_id(t + timedelta(microseconds=d)) for d in (0, 1, 50_000, 99_999)]
    assert ids == sorted(ids) and all(RUN_ID_RE.match(i) for i in ids)
    assert ids[0].startswith("20261204T181657.900000Z-")
