"""One pass of a model over a split, as `bevstream eval` runs it: detections written as submission boxes, tracks,
segmentation and road metrics accumulated at the keyframes."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from tqdm import tqdm

from lab.accumulators import RoadAccumulator, SegmentationAccumulator
from lab.devkit import complete_results
from lab.groundtruth import GroundTruth
from lab.recording import RecordingFilter
from perception.inputs import frame_set_inputs, rectify_label
from perception.rectify import Rectifier
from perception.road import rasterize_road
from replay.nuscenes.source import NuScenesSource
from replay.nuscenes.submission import ids_by_score, submission_boxes, tracking_entries, write_submission
from runtime.model_adapter import detection_arrays
from schema.attributes import AttributeConfig
from schema.messages import CAMERA_CHANNELS, Pose


def submission_entries(dets, sample_token: str, ego_to_global: Pose, max_boxes: int = 500,
                       attributes: AttributeConfig = AttributeConfig()) -> list[dict]:
    """Ego-frame perception.structures.Detections of a keyframe -> official submission boxes, through the
    runtime's own conversion (detection_arrays, DetectionArrays.to_global) and writer (submission_boxes)."""
    return submission_boxes(sample_token, detection_arrays(dets, attributes).to_global(ego_to_global), max_boxes)


@dataclass
class ModelRun:
    """What one pass of a model over a split collected."""

    results: dict[str, list[dict]] = field(default_factory=dict)  # sample token -> submission boxes
    tracks: dict[str, list[dict]] | None = None  # sample token -> tracking submission boxes; None: no tracker
    segmentation: SegmentationAccumulator = field(default_factory=SegmentationAccumulator)
    road: RoadAccumulator = field(default_factory=RoadAccumulator)
    frames: int = 0
    keyframes: int = 0
    wall_s: float = 0.0


def run_model(model, source, gt_reader, progress: bool = True, max_boxes: int = 500, reset_every: int | None = None,
              record_ticks: list | None = None) -> ModelRun:
    """Stream every frame set of `source` through `model` (state reset at each new scene, so sweeps warm
    the temporal state); the model's tracker (if on) sees every frame's boxes; at keyframes collect detections,
    segmentation and road metrics.
    `reset_every` N starts every N-th frame from a fresh state: N = 1 shows what the history contributes.
    `record_ticks`, with the tracker on: each frame's boxes as they reach it are appended
    (lab.recording.TickBoxes), for fitting its levels."""
    rect = Rectifier(model.config.rectify)
    road_cfg = model.road_head.config
    grid = model.config.grid
    run = ModelRun()
    bar = None
    if progress:
        bar = tqdm(total=len(source), desc="eval", unit="frame", dynamic_ncols=True)
    t0 = time.perf_counter()
    state = None
    tracker = model.new_tracker()  # fed every frame, as the runtime's BEV stage feeds it
    if tracker is not None:
        run.tracks = {}
    segment = -1  # counts fresh starts of the tracker: its ids restart at each (tracking_entries' prefix)
    model.eval()
    with torch.no_grad():
        for fs in source.frame_sets():
            x = frame_set_inputs(fs, rect)
            reset = reset_every is not None and run.frames % reset_every == 0
            if reset:
                state = None
            out, state = model(x, state)
            run.frames += 1
            if bar is not None:
                bar.update(1)
            filters = None
            if tracker is not None:
                segment += bool(reset or fs.new_scene)
                filters = [tracker.track_filter(fs.ego_to_global.matrix, fs.timestamp_us / 1e6, new_scene=reset or fs.new_scene)]
            if filters is not None and record_ticks is not None:
                filters = [RecordingFilter(filters[0], reset or fs.new_scene, fs.ego_to_global,
                                           fs.sample_token if fs.is_keyframe else None, record_ticks)]
            if not fs.is_keyframe:
                if filters is not None:
                    model.detection_head.decode(out.detection, track_filters=filters)
                continue
            run.keyframes += 1
            post = model.postprocess(out, track_filters=filters)[0]
            run.results[fs.sample_token] = submission_entries(post["detections"], fs.sample_token, fs.ego_to_global,
                                                              max_boxes, model.config.attributes)
            if filters is not None:
                ids = ids_by_score(post["detections"].scores.numpy(), filters[0].track_ids)
                run.tracks[fs.sample_token] = tracking_entries(run.results[fs.sample_token], ids, f"{segment}-")
            gt = gt_reader.for_frame_set(fs)
            for cam, label in zip(fs.cameras, gt.seg_labels):
                if label is None:
                    continue
                target = rectify_label(rect, cam.channel, label, cam.intrinsic, cam.sensor_to_ego.matrix)
                run.segmentation.update(post["seg"][CAMERA_CHANNELS.index(cam.channel)].long(), target)
            if gt.road is not None:
                prob = torch.sigmoid(out.road_logits[0].float())
                gt_mask = rasterize_road(gt.road, grid, road_cfg.upsample, road_cfg.thickness_m)
                run.road.update((prob > road_cfg.threshold).numpy(), gt_mask > 0.5,
                                model.road_head.vectorize_scored(out.road_logits)[0], gt.road)
    if bar is not None:
        bar.close()
    run.wall_s = time.perf_counter() - t0
    return run


def predict_split(model, nusc, dataroot: Path, version: str, eval_set: str, results_path: Path, who: str,
                  scenes: Sequence[str] | None = None, keyframes_only: bool = False, reset_every: int | None = None,
                  progress: bool = True, record_ticks: list | None = None) -> tuple[ModelRun, Path]:
    """Run `model` over the split's scenes of a dataroot (run_model) and write the complete submission file.
    -> (the run, the file's path)."""
    source = NuScenesSource(dataroot, version, scenes=scenes, split=eval_set, keyframes_only=keyframes_only)
    print(f"{who}: {source.describe()}", flush=True)
    gt = GroundTruth(nusc, model.config.grid)
    run = run_model(model, source, gt, progress=progress, reset_every=reset_every, record_ticks=record_ticks)
    return run, write_submission(results_path, complete_results(nusc, run.results, eval_set))
