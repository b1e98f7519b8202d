"""The write time text of a session save: the fast formatter writes what `datetime` writes."""

import random
from datetime import UTC, datetime

from edge.service import rfc3339


def reference(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_the_text_is_datetimes_for_random_and_boundary_times():
    rnd = random.Random(12)
    times = [rnd.uniform(0, 4e9) for _ in range(20_000)] + [rnd.uniform(1.7e9, 1.9e9) for _ in range(20_000)]
    times += [0.0, 0.0005, 0.9999995, 1.9999999, 1_800_000_000.9995, 1_800_000_000.9999996, 253402300799.0]
    times += [1_800_000_000 + k / 1000 for k in range(1000)] + [1_800_000_000 + k * 1e-7 for k in range(1000)]
    assert [rfc3339(t) for t in times] == [reference(t) for t in times]


def test_a_time_beyond_the_fast_range_is_written_as_datetime_writes_it():
    assert rfc3339(-1.5) == reference(-1.5)
