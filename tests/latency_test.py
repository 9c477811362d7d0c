"""The latency protocol on a stub timer: interleaving, warm-up and the stopping rule.

No real timing here: the timer returns scripted microseconds and records the
order in which it was called.
"""

import pytest

from export import latency


class StubTimer:
    """Returns scripted times per name and records the call order."""

    def __init__(self, scripts):
        self.scripts = {name: iter(times * 10000) for name, times in scripts.items()}
        self.order = []

    def __call__(self, call):
        name = call()
        self.order.append(name)
        return next(self.scripts[name])


def calls_for(names, log):
    def make(name):
        def call():
            log.append(name)
            return name

        return call

    return {name: make(name) for name in names}


def test_rounds_interleave_and_rotate_after_warmup():
    log = []
    timer = StubTimer({"a": [10.0], "b": [20.0], "c": [30.0]})
    out = latency.run_protocol(
        calls_for("abc", log), timer, warmup=2, min_runs=3, max_runs=3, check_every=1
    )
    # Warm-up rounds are untimed but interleaved too.
    assert log[:6] == ["a", "b", "c", "b", "c", "a"]
    assert timer.order == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert {k: v["latency_runs"] for k, v in out.items()} == {"a": 3, "b": 3, "c": 3}
    assert out["b"]["latency_us_median"] == 20.0 and out["b"]["latency_cv"] == 0.0


def test_stops_as_soon_as_every_median_ci_is_within_target():
    # Constant times: the CI is a point, so the first check stops the run.
    timer = StubTimer({"a": [10.0], "b": [50.0]})
    out = latency.run_protocol(
        calls_for("ab", []), timer, warmup=0, min_runs=20, max_runs=1000, check_every=10
    )
    assert out["a"]["latency_runs"] == 20 and out["a"]["latency_converged"]


def test_one_noisy_model_keeps_all_running_until_cap():
    # 'b' alternates 10 / 30 us: its median CI never narrows to 2%.
    timer = StubTimer({"a": [10.0], "b": [10.0, 30.0]})
    out = latency.run_protocol(
        calls_for("ab", []), timer, warmup=0, min_runs=20, max_runs=200, check_every=10
    )
    assert out["a"]["latency_runs"] == out["b"]["latency_runs"] == 200
    assert not out["b"]["latency_converged"] and not out["a"]["latency_converged"]


def test_noise_that_settles_stops_at_the_first_check_it_passes():
    # 40 scattered calls (80 / 120 us) then a steady 100 us. With k =
    # floor((n - 1.96 sqrt(n)) / 2), both CI ends are 100 once k >= 20, i.e.
    # from n = 55; checks run at 10, 20, ..., so the run stops at 60.
    times = [80.0, 120.0] * 20 + [100.0] * 5000
    timer = StubTimer({"a": times})
    out = latency.run_protocol(
        calls_for("a", []), timer, warmup=0, min_runs=10, max_runs=5000, check_every=10
    )["a"]
    assert out["latency_converged"] and out["latency_runs"] == 60
    assert out["latency_us_ci95"] == [100.0, 100.0]
    assert (out["latency_us_p10"], out["latency_us_p90"]) == (80.0, 120.0)


def test_median_ci_order_statistics():
    samples = list(range(1, 101))  # n = 100: k = floor((100 - 19.6) / 2) = 40.
    assert latency.median_ci(samples) == (41, 60)
    assert latency.median_ci([3, 1, 2]) == (1, 3)  # Too few for an interval.
    assert latency.ci_within([100.0] * 10, 0.02)
    assert not latency.ci_within([90.0, 100.0, 110.0] * 5, 0.02)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="at least one"):
        latency.run_protocol({})
    with pytest.raises(ValueError, match="min_runs=5, max_runs=2"):
        latency.run_protocol({"a": lambda: None}, min_runs=5, max_runs=2)


def test_the_timing_process_pins_the_highest_cpus(monkeypatch):
    pinned = []
    monkeypatch.setattr(latency.os, "sched_setaffinity", lambda pid, cpus: pinned.append(cpus))
    assert latency.pin_cpus(1, available={0, 1, 2, 3}) == [3]
    assert latency.pin_cpus(2, available={0, 1, 2, 3}) == [2, 3]
    assert latency.pin_cpus(8, available={0, 1}) == [0, 1]
    assert pinned == [[3], [2, 3], [0, 1]]
