"""One pass of a model over a split, as `bevstream eval` runs it: the runtime's own tick (runtime.stages, in this
process, no Ray) on every frame set, its keyframe detections and tracks written as the runtime's sink writes them,
segmentation and road metrics accumulated at the keyframes. Eval thus scores exactly what the runtime computes."""
from __future__ import annotations

import copy
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from tqdm import tqdm

from lab.accumulators import RoadAccumulator, SegmentationAccumulator
from lab.devkit import complete_results
from lab.groundtruth import GroundTruth
from lab.recording import RecordingFilter
from perception.inputs import rectify_label
from perception.rectify import Rectifier
from perception.road import rasterize_road
from replay.nuscenes.source import NuScenesSource
from replay.nuscenes.submission import submission_boxes, write_submission
from runtime.model_adapter import BEVStreamAdapter, detection_arrays
from runtime.prescale import Prescaler
from runtime.sink import keyframe_entries
from runtime.stages import BackboneStage, BevStage, TickMeta
from runtime.validate import check_frame_set
from schema.attributes import AttributeConfig
from schema.camera import scale_intrinsic
from schema.messages import FrameSet, Pose
from schema.results import TickResult


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
    frames: int = 0  # frame sets run through the tick
    keyframes: int = 0
    dropped: int = 0  # frame sets the runtime's input check refuses (its drop records): not run, as in the runtime
    wall_s: float = 0.0


def runtime_stages(model, record_ticks: list | None = None) -> tuple[BackboneStage, BevStage]:
    """The runtime's two stages over a BEVStreamModel, as its actors build them (ModelFactory: the adapter over
    the model prepared for inference). The model is copied first: preparation rewrites a model in place, and
    the caller's (perhaps training) model stays as it was. `record_ticks`: each tick's boxes as they reach the
    tracker are appended to it (lab.recording.TickBoxes)."""
    adapter = BEVStreamAdapter(copy.deepcopy(model).eval().prepare_for_inference())
    wrap = None
    if record_ticks is not None:
        def wrap(track_filter, meta: TickMeta):
            return RecordingFilter(track_filter, meta.new_scene, meta.ego_to_global, meta.sample_token, record_ticks)
    return BackboneStage(adapter), BevStage(adapter, wrap_track_filter=wrap)


@contextmanager
def decoded_as_replayed(source, prescaler: Prescaler, scaled_decode: bool):
    """The source's JPEGs decoded as `bevstream replay` decodes them (runtime.api: at the coarsest scale the
    rectifier still uses in full, with `scaled_decode`), full size again afterwards."""
    scaled = scaled_decode and hasattr(source, "decode_for")
    if scaled:
        source.decode_for(prescaler.needed_size)
    try:
        yield
    finally:
        if scaled:
            source.decode_for(None)


class KeyframeScores:
    """Segmentation and road metrics of keyframe ticks against the ground truth, from the runtime's outputs."""

    def __init__(self, model, gt_reader, run: ModelRun):
        self.rect = Rectifier(model.config.rectify)
        self.road_head, self.grid, self.gt_reader, self.run = model.road_head, model.config.grid, gt_reader, run

    def add(self, fs: FrameSet, result: TickResult, outputs: dict) -> None:
        """A keyframe's frame set (its images at any scale), its tick's result and the model's raw step outputs (BevStage.last_outputs)."""
        gt = self.gt_reader.for_frame_set(fs)
        for cam, label in zip(fs.cameras, gt.seg_labels):
            if label is None:
                continue
            h, w = label.shape[:2]  # the label's camera: the image's, scaled to the label's size
            k = scale_intrinsic(cam.intrinsic, w / cam.image.shape[1], h / cam.image.shape[0])
            target = rectify_label(self.rect, cam.channel, label, k, cam.sensor_to_ego.matrix)  # (H, W)
            pred = torch.from_numpy(result.seg[result.seg_channels.index(cam.channel)])  # (H/4, W/4) uint8
            pred = F.interpolate(pred[None, None].float(), size=tuple(target.shape), mode="nearest")[0, 0].long()
            self.run.segmentation.update(pred, target)
        if gt.road is not None:
            cfg = self.road_head.config
            logits = outputs["road_logits"]  # (1, R, Hr, Wr)
            gt_mask = rasterize_road(gt.road, self.grid, cfg.upsample, cfg.thickness_m)
            self.run.road.update((torch.sigmoid(logits[0].float()) > cfg.threshold).numpy(), gt_mask > 0.5,
                                 self.road_head.vectorize_scored(logits)[0], gt.road)


def run_model(model, source, gt_reader, progress: bool = True, max_boxes: int = 500, reset_every: int | None = None,
              record_ticks: list | None = None, scaled_decode: bool = True) -> ModelRun:
    """Every frame set of `source` through the runtime's tick (runtime.stages: prescale, BackboneStage, BevStage,
    which owns the temporal state and the tracker and restarts both at each new scene); at keyframes collect
    the submission and tracking boxes as the runtime's sink writes them, and segmentation and road metrics.
    `reset_every` N starts every N-th frame as a new scene (fresh state and tracks): N = 1 shows what the
    history contributes. `record_ticks`, with the tracker on: each frame's boxes as they reach it are appended
    (lab.recording.TickBoxes), for fitting its levels. `scaled_decode`: decode JPEGs as the replay does
    (runtime.yaml pipeline.scaled_decode), so the backbone sees the replay's very pixels."""
    backbone, bev = runtime_stages(model, record_ticks)
    prescaler = Prescaler(model.config.rectify)
    run = ModelRun(tracks=None if bev.tracker is None else {})
    scores = KeyframeScores(bev.model.model, gt_reader, run)
    bar = tqdm(total=len(source), desc="eval", unit="frame", dynamic_ncols=True) if progress else None
    fresh = -1  # counts fresh starts of the tracker: its ids restart at each (tracking_entries' prefix)
    t0 = time.perf_counter()
    with decoded_as_replayed(source, prescaler, scaled_decode):
        for fs in source.frame_sets():
            if bar is not None:
                bar.update(1)
            fs = prescaler(fs)  # as the runtime's feeder does, before the input check
            if check_frame_set(fs) is not None:
                run.dropped += 1
                continue
            meta = TickMeta.from_frame_set(fs)
            if reset_every is not None and run.frames % reset_every == 0:
                meta = replace(meta, new_scene=True)
            fresh += meta.new_scene
            result = bev.run(backbone.run([c.image for c in fs.cameras], meta), meta)
            run.frames += 1
            if meta.sample_token is None:
                continue
            run.keyframes += 1
            run.results[meta.sample_token], tracks = keyframe_entries(result, max_boxes, f"{fresh}-")
            if tracks is not None:
                run.tracks[meta.sample_token] = tracks
            scores.add(fs, result, bev.last_outputs)
    if bar is not None:
        bar.close()
    run.wall_s = time.perf_counter() - t0
    return run


def predict_split(model, nusc, dataroot: Path, version: str, eval_set: str, results_path: Path, who: str,
                  scenes: Sequence[str] | None = None, keyframes_only: bool = False, reset_every: int | None = None,
                  progress: bool = True, record_ticks: list | None = None,
                  scaled_decode: bool = True) -> tuple[ModelRun, Path]:
    """Run `model` over the split's scenes of a dataroot (run_model) and write the complete submission file.
    -> (the run, the file's path)."""
    source = NuScenesSource(dataroot, version, scenes=scenes, split=eval_set, keyframes_only=keyframes_only)
    print(f"{who}: {source.describe()}", flush=True)
    gt = GroundTruth(nusc, model.config.grid)
    run = run_model(model, source, gt, progress=progress, reset_every=reset_every, record_ticks=record_ticks,
                    scaled_decode=scaled_decode)
    return run, write_submission(results_path, complete_results(nusc, run.results, eval_set))
