"""The box tracker's tracks scored by the devkit's TrackingEval (config 'tracking_nips_2019': AMOTA, AMOTP,
MOTA, ...): the keyframe boxes with their track ids, in the official tracking submission format

    {"meta": {...}, "results": {sample_token: [{"sample_token", "translation", "size", "rotation", "velocity",
                                                "tracking_id", "tracking_name", "tracking_score"}, ...]}}

as nuscenes.eval.tracking.data_classes.TrackingBox reads it. Only the seven tracking classes are tracked there
(no cones, barriers or construction vehicles); every sample of the split must appear.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

from lab.devkit import devkit_config
from replay.nuscenes.submission import read_submission
from schema.classes import TRACKING_NAMES

TRACKING_CONFIG = "tracking_nips_2019"


def tracking_submission(path: str | Path) -> dict[str, list[dict]]:
    """The boxes (sample token -> tracking boxes) of a tracking submission file; a file of another kind (a
    detection submission, say) -> ValueError naming what its boxes lack."""
    results, _ = read_submission(path)
    fields = ("tracking_id", "tracking_name", "tracking_score")
    for boxes in results.values():
        for box in boxes:
            missing = [f for f in fields if f not in box]
            if missing:
                raise ValueError(f"{path} is not a tracking submission: its boxes lack {', '.join(missing)}")
            if box["tracking_name"] not in TRACKING_NAMES:
                raise ValueError(f"{path}: unknown tracking_name {box['tracking_name']!r}; the devkit tracks {TRACKING_NAMES}")
    return results


def tracking_summary(metrics: dict) -> dict:
    """The headline figures of TrackingMetrics.serialize(): AMOTA, AMOTP, MOTA, MOTP, recall, identity switches,
    fragmentations, and AMOTA per class."""
    return {
        "AMOTA": metrics["amota"], "AMOTP": metrics["amotp"], "MOTA": metrics["mota"], "MOTP": metrics["motp"],
        "recall": metrics["recall"], "IDS": int(metrics["ids"]), "FRAG": int(metrics["frag"]),
        "per_class_AMOTA": {name: metrics["label_metrics"]["amota"][name] for name in TRACKING_NAMES},
    }


def run_tracking_eval(dataroot: str | Path, version: str, results_path: str | Path, eval_set: str,
                      output_dir: str | Path | None = None, max_range: float | None = None) -> dict | str:
    """Score a tracking submission file with the devkit's TrackingEval (it loads the tables itself) ->
    tracking_summary(...), or why it could not run (a file without a box of a tracking class: the devkit fails on
    it). Writes the devkit's metrics_summary.json and metrics_details.json to output_dir."""
    from nuscenes.eval.tracking.evaluate import TrackingEval


    results = json.loads(Path(results_path).read_text()).get("results", {})
    if not any(results.values()):
        return "not available (no tracked box of a tracking class)"
    with tempfile.TemporaryDirectory(prefix="bevstream-trackeval-") as tmp:
        out = Path(output_dir) if output_dir is not None else Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        ev = TrackingEval(devkit_config(TRACKING_CONFIG, max_range), str(results_path), eval_set, str(out),
                          nusc_version=version, nusc_dataroot=str(dataroot), verbose=False)
        return tracking_summary(ev.main(render_curves=False))


def format_tracking(summary: dict | str) -> list[str]:
    """The tracking section of `bevstream eval`'s printed report."""
    if not isinstance(summary, dict):
        return [f"tracking: {summary}"]
    return [f"tracking (nuScenes TrackingEval, {TRACKING_CONFIG})",
            "  " + "  ".join(f"{k} {summary[k]:.4f}" for k in ("AMOTA", "AMOTP", "MOTA", "MOTP", "recall"))
            + f"  IDS {summary['IDS']}  FRAG {summary['FRAG']}",
            "  AMOTA " + "  ".join(f"{k} {v:.3f}" for k, v in summary["per_class_AMOTA"].items())]
