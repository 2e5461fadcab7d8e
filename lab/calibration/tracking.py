"""The box tracker's levels (perception.tracking) fitted on a training split, as `bevstream calibrate` fits the
NMS radii and still speeds: by the devkit's NDS of the boxes the tracker puts out.

The model's boxes of every frame are recorded once, as they reach the tracker (`TickBoxes`, after the NMS;
calibrate records them with no circle radius, so that a replay can apply any).
A candidate set of levels is then tried by replaying those frames through a fresh tracker, with the circle
NMS, still speeds and attribute thresholds the runtime applies around it (`replay_tracker`), and scoring the
keyframes' submission boxes. The levels are searched one at a time, each over its candidates with the others
held (`coordinate_search`), because the full grid of five levels would take hours of scoring; a level moves
only for a gain in NDS above `MIN_GAIN`, so noise on the training scenes does not churn the shipped file.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from lab.model_run import submission_entries
from lab.recording import TickBoxes
from perception.nms import batched_nms_bev
from perception.still_speed import zero_slow_velocities
from perception.structures import Detections
from perception.tracking import BoxTracker, TrackingConfig
from schema.attributes import AttributeConfig

# The levels the search tries, in the order it visits them (the filter's noise first: the other levels act on
# its output). The acceleration and maximum age are not fitted: no other value gained on the shipped weights'
# training scenes. Nor is the association's gate: a wider one gained there, but not on held-out scenes, and
# the search then ended at different levels from different starts (README).
CANDIDATE_LEVELS: dict[str, tuple[float, ...]] = {
    "position_noise_m": (0.3, 0.45, 0.6, 0.9),
    "velocity_noise_mps": (0.5, 0.75, 1.0, 1.5),
    "still_track_speed_mps": (0.0, 0.5, 1.0, 1.5, 2.0),
    "score_memory_s": (0.25, 0.5, 1.0, 2.0),
    "score_track_weight": (0.0, 0.25, 0.5, 0.75),
}
MIN_GAIN = 5e-4  # NDS a level must gain to replace the weights' current level


def replay_tracker(ticks: Sequence[TickBoxes], tracking: TrackingConfig, nms_radius_m: Sequence[float],
                   still_speed_mps: Sequence[float], attributes: AttributeConfig, max_boxes: int = 500
                   ) -> dict[str, list[dict]]:
    """Recorded frames through a fresh tracker, as the runtime's decode runs it: circle NMS with the per-class
    radii, the tracker (unless `tracking` is off), still speeds -> {sample token: submission boxes} of the
    keyframes."""
    tracker = BoxTracker(tracking) if tracking.enabled else None
    results = {}
    for tick in ticks:
        keep = batched_nms_bev(tick.boxes, tick.scores, tick.labels, 1.0, radii=nms_radius_m)  # IoU <= 1: circles only
        boxes, scores, labels = tick.boxes[keep], tick.scores[keep], tick.labels[keep]  # (k, 9), (k,), (k,)
        if tracker is not None:
            track = tracker.track_filter(tick.ego_to_global.matrix, tick.timestamp_s, new_scene=tick.new_scene)
            boxes, scores = track(boxes, scores, labels)
        if tick.sample_token is None:
            continue
        boxes = zero_slow_velocities(boxes, labels, still_speed_mps)
        results[tick.sample_token] = submission_entries(Detections(boxes.float(), scores.float(), labels),
                                                        tick.sample_token, tick.ego_to_global, max_boxes, attributes)
    return results


@dataclass(frozen=True)
class Trial:
    """One set of levels the search scored."""

    levels: dict[str, float]
    score: float


def coordinate_search(start: Mapping[str, float], candidates: Mapping[str, Sequence[float]],
                      objective: Callable[[dict[str, float]], float], sweeps: int = 2, min_gain: float = MIN_GAIN
                      ) -> tuple[dict[str, float], list[Trial]]:
    """Maximise `objective` one level at a time: each key of `candidates` in turn takes its best candidate with
    the other levels held, if that beats the current level by more than `min_gain`. Repeats for up to `sweeps`
    passes, stopping after a pass that changed nothing; no set of levels is scored twice.
    -> (the best levels, every trial in the order scored; the first is `start`)."""
    scored: dict[tuple, float] = {}
    trials: list[Trial] = []

    def score(levels: dict[str, float]) -> float:
        key = tuple(sorted(levels.items()))
        if key not in scored:
            scored[key] = float(objective(dict(levels)))
            trials.append(Trial(dict(levels), scored[key]))
        return scored[key]

    best = dict(start)
    best_score = score(best)
    for _ in range(sweeps):
        changed = False
        for name, values in candidates.items():
            for value in values:
                trial = {**best, name: float(value)}
                s = score(trial)
                if s > best_score + min_gain:
                    best, best_score, changed = trial, s, True
        if not changed:
            break
    return best, trials


@dataclass(frozen=True)
class TrackingFit:
    """The fitted levels, their NDS on the calibration samples, and the weights' levels before."""

    levels: dict[str, float]
    nds: float
    previous_levels: dict[str, float]
    previous_nds: float
    trials: list[Trial]


def fit_tracking(ticks: Sequence[TickBoxes], previous: TrackingConfig, nds_of: Callable[[dict[str, list[dict]]], float],
                 nms_radius_m: Sequence[float], still_speed_mps: Sequence[float], attributes: AttributeConfig,
                 candidates: Mapping[str, Sequence[float]] = CANDIDATE_LEVELS, sweeps: int = 2,
                 progress: Callable[[Trial], None] | None = None) -> TrackingFit:
    """The tracker levels of `candidates` (keys of TrackingConfig) under which the recorded frames score the
    highest NDS (`nds_of` a keyframes' submission), starting from the weights' `previous` levels."""
    unknown = set(candidates) - {f.name for f in dataclasses.fields(TrackingConfig)}
    if unknown:
        raise ValueError(f"fit_tracking: no tracker level named {sorted(unknown)}")
    start = {name: float(getattr(previous, name)) for name in candidates}

    def objective(levels: dict[str, float]) -> float:
        results = replay_tracker(ticks, dataclasses.replace(previous, **levels), nms_radius_m, still_speed_mps, attributes)
        nds = nds_of(results)
        if progress is not None:
            progress(Trial(levels, nds))
        return nds

    best, trials = coordinate_search(start, candidates, objective, sweeps)
    nds = {tuple(sorted(t.levels.items())): t.score for t in trials}
    return TrackingFit(best, nds[tuple(sorted(best.items()))], start, trials[0].score, trials)


def levels_table(fit: TrackingFit) -> str:
    """The fit as text: each level before and after, and the NDS."""
    rows = [f"{'tracker level':<24}{'fitted':>8}{'before':>8}"]
    rows += [f"{name:<24}{fit.levels[name]:>8.2f}{fit.previous_levels[name]:>8.2f}" for name in fit.levels]
    rows.append(f"{'NDS':<24}{fit.nds:>8.4f}{fit.previous_nds:>8.4f}   ({len(fit.trials)} sets of levels scored)")
    return "\n".join(rows)
