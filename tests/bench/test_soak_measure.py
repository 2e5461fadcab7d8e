"""bench/soak.py's measurements on small inputs: the /proc RSS reader against memory this test touches and
processes it starts, growth between windows on synthetic samples, p99 against numpy's nearest-rank percentile,
the frame-set accounting, and the looping replay's numbering."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass

import numpy as np
import pytest

from bench.soak import LoopingReplay, windows
from bench.soak_measure import (RssSample, RssSampler, accounting, descendants, label, latency_windows, p99,
                                rss_bytes, rss_growth, window_load)


def test_rss_grows_by_the_memory_touched():
    before = rss_bytes(os.getpid())
    block = bytearray(64 * 2**20)  # zero-filled: every page written
    after = rss_bytes(os.getpid())
    assert before > 10 * 2**20 and after - before >= 56 * 2**20
    del block
    assert rss_bytes(2**22 + 12345) is None  # no such process (pid_max is at most 2**22)


@pytest.fixture
def grandchild():
    """A child python process that starts its own child; yields (child pid, grandchild pid)."""
    code = ("import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']);"
            " print(p.pid, flush=True); time.sleep(60)")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    grand = int(child.stdout.readline())
    yield child.pid, grand
    for pid in (grand, child.pid):
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
    child.wait()


def test_the_sampler_sees_children_and_grandchildren(grandchild):
    child, grand = grandchild
    assert {child, grand} <= set(descendants(os.getpid()))
    assert label(child) == "python3" or label(child).startswith("python")
    ticks = [0]
    sampler = RssSampler(interval_s=0.05, progress=lambda: ticks[0], names={grand: "sleeper"}).start()
    time.sleep(0.2)
    ticks[0] = 7
    last = sampler.sample()
    sampler.stop()
    assert len(sampler.samples) >= 3 and last.tick == 7 and sampler.samples[0].tick == 0
    assert f"driver[{os.getpid()}]" in last.rss and f"sleeper[{grand}]" in last.rss
    assert any(k.endswith(f"[{child}]") for k in last.rss)
    assert last.total == sum(last.rss.values())


def _samples(series: dict[str, list[int]], ticks: list[int]) -> list[RssSample]:
    return [RssSample(t, float(i), {k: v[i] for k, v in series.items() if v[i] is not None}) for i, t in enumerate(ticks)]


def test_growth_compares_window_medians_per_process_and_in_total():
    ticks = list(range(0, 100, 10))  # samples at ticks 0, 10, ..., 90
    steady = [100] * 10
    leaking = [200, 200, 200, 200, 210, 220, 230, 240, 240, 240]
    spiky = [50, 50, 500, 50, 50, 50, 50, 50, 50, 50]  # one sample caught a burst: the median ignores it
    late = [None] * 5 + [30] * 5  # started after the first window: in the total only
    g = rss_growth(_samples({"a": steady, "b": leaking, "c": spiky, "d": late}, ticks), (10, 30), (70, 90))
    assert g["per_process"]["a"]["growth"] == 0 and g["per_process"]["c"]["growth"] == 0
    assert g["per_process"]["b"]["growth"] == pytest.approx(0.2) and g["max_process"] == "b"
    assert "d" not in g["per_process"]
    assert g["total"] == pytest.approx((100 + 240 + 50 + 30) / (100 + 200 + 50) - 1)
    assert g["samples"] == [3, 3]


def test_growth_falls_back_to_the_nearest_sample_when_a_window_has_none():
    s = _samples({"a": [100, 110, 150]}, [0, 40, 95])
    g = rss_growth(s, (5, 20), (60, 90))  # nothing inside either: the first after 5, the last before 90
    assert g["per_process"]["a"]["growth"] == pytest.approx(0.0)  # both sides are the sample at tick 40
    assert rss_growth(s, (0, 40), (95, 95))["per_process"]["a"]["growth"] == pytest.approx(150 / 105 - 1)
    with pytest.raises(ValueError):
        rss_growth([], (0, 1), (1, 2))


@pytest.mark.parametrize("n", [1, 2, 7, 100, 1000, 1001])
def test_p99_is_numpys_nearest_rank(n):
    xs = np.random.default_rng(n).lognormal(4.0, 0.5, n)
    assert p99(list(xs)) == np.percentile(xs, 99, method="nearest")


def test_latency_windows_compare_the_first_window_after_warm_up_with_the_last():
    lat = [1000.0] * 5 + [10.0] * 100 + [20.0] * 100  # warm-up outliers, then a slowdown
    w = latency_windows(lat, warmup=5, window=100)
    assert (w["p99_first_ms"], w["p99_last_ms"], w["p99_ratio"]) == (10.0, 20.0, 2.0)
    assert w["first_window"] == [5, 105] and w["last_window"] == [105, 205]
    with pytest.raises(ValueError):
        latency_windows(lat, warmup=5, window=101)


def test_accounting_counts_every_frame_set():
    assert accounting(10, 8, {"overload": 1, "actor_failed": 1})["unaccounted"] == 0
    a = accounting(10, 8, {"overload": 1})
    assert a["unaccounted"] == 1 and a["dropped"] == 1 and a["drops_by_reason"] == {"overload": 1}


@dataclass
class _Set:
    frame_id: int
    new_scene: bool


class _Source:
    """Two scenes of 3 sets each, numbered from first_frame_id as NuScenesSource numbers them."""

    def __init__(self, n: int = 3):
        self.first_frame_id, self.n = 0, n

    def frame_sets(self):
        for i in range(2 * self.n):
            yield _Set(self.first_frame_id + i, i % self.n == 0)

    def describe(self):
        return "two scenes"


def test_looping_replay_runs_on_across_passes():
    loop = LoopingReplay(_Source(), 14)
    sets = list(loop.frame_sets())
    assert [s.frame_id for s in sets] == list(range(14))  # ids run on: the runtime sees one long stream
    assert loop.emitted == 14 and loop.passes == 3 and loop.scene_starts == 5  # starts at 0, 3, 6, 9, 12
    with pytest.raises(RuntimeError, match="no frame set"):
        list(LoopingReplay(_Source(0), 5).frame_sets())


def test_windows_scale_down_for_short_runs():
    assert windows(10_000, None, None) == (500, 1000)
    assert windows(300, None, None) == (30, 135)
    with pytest.raises(SystemExit):
        windows(100, 50, 30)


def test_window_load_averages_the_samples_of_each_window():
    s = [RssSample(t, 0.0, {"a": 1}, load) for t, load in [(0, 9.0), (10, 2.0), (20, 4.0), (80, 6.0), (90, 8.0)]]
    assert window_load(s, (10, 20), (80, 90)) == {"first": 3.0, "last": 7.0}


def test_a_worker_titled_later_keeps_one_series():
    sampler = RssSampler()
    sampler.samples.append(RssSample(0, 0.0, {"default_worker.py[42]": 5, "x[1]": 1}))
    sampler._rename("default_worker.py[42]", "ray::SinkActor[42]")
    assert sampler.samples[0].rss == {"ray::SinkActor[42]": 5, "x[1]": 1}


def test_a_process_missing_from_one_sample_of_a_window_still_counts():
    s = _samples({"sink": [10, 10, 11, None]}, [0, 10, 20, 30])  # gone at the very last sample
    assert rss_growth(s, (0, 10), (20, 30))["per_process"]["sink"]["growth"] == pytest.approx(0.1)
