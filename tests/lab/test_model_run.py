"""`bevstream eval`'s model run (lab.model_run): the runtime's own tick, so eval scores what the runtime computes."""
from __future__ import annotations

import copy
import dataclasses
import itertools
from types import SimpleNamespace

import torch

from schema.classes import DETECTION_NAMES


def _tiny_model():
    from perception.model import BEVStreamModel
    from tests.perception.model_fixtures import tiny_config

    torch.manual_seed(0)
    cfg = tiny_config()
    detection = dataclasses.replace(cfg.detection, score_threshold=0.0, nms_radius_m=(1.0,) * len(DETECTION_NAMES),
                                    max_detections=40)
    return BEVStreamModel(dataclasses.replace(cfg, detection=detection)).eval()


def _unprefixed(tracks: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """Tracking boxes with the run's per-fresh-start id prefix ('0-') taken off."""
    return {t: [{**b, "tracking_id": b["tracking_id"].split("-", 1)[1]} for b in boxes] for t, boxes in tracks.items()}


def test_eval_scores_what_the_runtime_stages_and_sink_give(real_scene_root, tmp_path):
    """The same frame sets through runtime.stages as the runtime's actors run them (ModelFactory's prepared
    adapter, the replay's scaled decode and prescale, ResultSink) give eval's keyframe boxes and tracks exactly;
    the caller's model, here in train mode, is left as it was."""
    from nuscenes.nuscenes import NuScenes

    from lab.groundtruth import GroundTruth
    from lab.model_run import run_model
    from replay.nuscenes.source import NuScenesSource
    from runtime.model_adapter import BEVStreamAdapter
    from runtime.prescale import Prescaler
    from runtime.sink import ResultSink
    from runtime.stages import BackboneStage, BevStage, TickMeta

    model = _tiny_model()
    source = NuScenesSource(real_scene_root, "v1.0-trainval", split="val", keyframes_only=True)
    source.frame_sets = lambda inner=source.frame_sets: itertools.islice(inner(), 4)
    nusc = NuScenes("v1.0-trainval", str(real_scene_root), verbose=False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    run = run_model(model, source, GroundTruth(nusc, model.config.grid), progress=False)
    assert model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())

    adapter = BEVStreamAdapter(copy.deepcopy(model).eval().prepare_for_inference())
    backbone, bev = BackboneStage(adapter), BevStage(adapter)
    prescaler = Prescaler(model.config.rectify)
    source.decode_for(prescaler.needed_size)
    sink = ResultSink(tmp_path)
    for fs in source.frame_sets():
        fs = prescaler(fs)
        meta = TickMeta.from_frame_set(fs)
        sink.write(bev.run(backbone.run([c.image for c in fs.cameras], meta), meta))
    sink.close()
    assert run.keyframes == run.frames == 4 and run.dropped == 0
    assert sum(len(b) for b in run.results.values()) > 20
    assert run.results == sink.results
    assert run.tracks is not None and _unprefixed(run.tracks) == sink.tracks


def test_reset_every_one_runs_each_frame_as_a_new_scene(sim_dataset, sim_nusc):
    """`--reset-every 1`: each frame's boxes (and tracks) are those of that frame run alone, as a new scene; without
    it the history changes them. Segmentation and road metrics are collected at the keyframes."""
    from lab.groundtruth import GroundTruth
    from lab.model_run import run_model
    from replay.nuscenes.source import NuScenesSource

    model = _tiny_model()
    gt = GroundTruth(sim_nusc, model.config.grid)
    frames = list(itertools.islice(NuScenesSource(sim_dataset.dataroot, sim_dataset.version, keyframes_only=True)
                                   .frame_sets(), 3))

    def source(sets):
        return SimpleNamespace(frame_sets=lambda: iter(sets), __len__=lambda: len(sets))

    reset = run_model(model, source(frames), gt, progress=False, reset_every=1)
    alone = [run_model(model, source([dataclasses.replace(fs, new_scene=True)]), gt, progress=False) for fs in frames]
    kept = run_model(model, source(frames), gt, progress=False)
    for k, fs in enumerate(frames):
        assert reset.results[fs.sample_token] == alone[k].results[fs.sample_token]
        assert _unprefixed(reset.tracks)[fs.sample_token] == _unprefixed(alone[k].tracks)[fs.sample_token]
        assert {b["tracking_id"].split("-")[0] for b in reset.tracks[fs.sample_token]} <= {str(k)}  # one prefix a start
    assert kept.results[frames[0].sample_token] == reset.results[frames[0].sample_token]
    assert kept.results[frames[2].sample_token] != reset.results[frames[2].sample_token]
    assert reset.segmentation.images == 3 * 6 and reset.segmentation.result() is not None
    assert reset.road.result() is not None


def test_record_ticks_logs_every_frame_as_the_tracker_gets_it(sim_dataset, sim_nusc):
    """record_ticks: one TickBoxes a frame, new_scene at each fresh start, the keyframe's sample token."""
    from lab.groundtruth import GroundTruth
    from lab.model_run import run_model
    from replay.nuscenes.source import NuScenesSource

    model = _tiny_model()
    source = NuScenesSource(sim_dataset.dataroot, sim_dataset.version, keyframes_only=True)
    source.frame_sets = lambda inner=source.frame_sets: itertools.islice(inner(), 4)
    ticks: list = []
    run = run_model(model, source, GroundTruth(sim_nusc, model.config.grid), progress=False, reset_every=2,
                    record_ticks=ticks)
    assert [t.new_scene for t in ticks] == [True, False, True, False]
    assert [t.sample_token for t in ticks] == list(run.results)
    assert all(len(t.boxes) == len(t.scores) == len(t.labels) for t in ticks)


def test_a_frame_set_the_runtime_drops_is_not_run(sim_dataset, sim_nusc):
    """A frame set failing the runtime's input check (a non-finite pose) is dropped, as the runtime drops it."""
    import numpy as np

    from lab.groundtruth import GroundTruth
    from lab.model_run import run_model
    from replay.nuscenes.source import NuScenesSource
    from schema.messages import Pose

    model = _tiny_model()
    frames = list(itertools.islice(NuScenesSource(sim_dataset.dataroot, sim_dataset.version, keyframes_only=True)
                                   .frame_sets(), 2))
    pose = frames[1].ego_to_global
    frames[1] = dataclasses.replace(frames[1], ego_to_global=Pose(np.array([np.nan, 0.0, 0.0]), pose.rotation))
    src = SimpleNamespace(frame_sets=lambda: iter(frames), __len__=lambda: 2)
    run = run_model(model, src, GroundTruth(sim_nusc, model.config.grid), progress=False)
    assert (run.frames, run.keyframes, run.dropped) == (1, 1, 1)
    assert list(run.results) == [frames[0].sample_token]
