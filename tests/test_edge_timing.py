"""edge_runtime.timing's call timers, the one way batch-1 latency is measured (edge-classify --bench,
compare, device_cost, the tune search): warm-up calls untimed, every timed call counted, turns rotated."""
from edge_runtime.timing import call_seconds, round_robin_seconds


def test_call_seconds_times_each_call_after_the_warm_up():
    log = []
    times = call_seconds(lambda: log.append(1), 7, warmup=3)
    assert len(log) == 10 and times.shape == (7,) and (times >= 0).all()


def test_round_robin_rotates_the_order_and_warms_up_as_asked():
    log = []
    calls = {n: (lambda n=n: log.append(n)) for n in "abc"}
    seconds = round_robin_seconds(calls, rounds=3, per_round=2, warmup=1)
    assert {n: s.shape for n, s in seconds.items()} == {n: (3, 2) for n in "abc"}
    assert "".join(log) == "abc" + "aabbcc" + "bbccaa" + "ccaabb"
    log.clear()
    round_robin_seconds(calls, rounds=2, per_round=1, warmup_each_round=1, rotate=False)
    assert "".join(log) == "aabbcc" * 2
