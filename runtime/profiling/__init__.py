"""Latency profiling of the runtime (`bevstream profile`): where each millisecond of a tick goes.

trace.py: a run's StageTimings as a Chrome/Perfetto trace (a track per stage and per camera, flows per tick);
budgets.py: per-stage percentiles and deadline misses against `profile.budgets_ms`;
session.py: one profiled run of a configuration, and two compared; ops.py: the op-level breakdown of a stage.
"""
from runtime.profiling.trace import chrome_trace, write_trace

__all__ = ["chrome_trace", "write_trace"]
