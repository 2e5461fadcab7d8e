"""A tiny deterministic model and in-memory sources for the runtime tests (tests only).

`CountingModel` follows runtime.stages.PerceptionModel. Its temporal state is the number of ticks
since the last reset, and each tick emits one 'car' at x = that count, so a test can tell from the
output whether the state was reset, kept, or restored from a checkpoint.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from pyquaternion import Quaternion

from schema.messages import CAMERA_CHANNELS, CameraFrame, EgoKinematics, FrameSet, Pose
from schema.results import DetectionArrays, Polyline


class CountingModel:
    def __init__(self, size: tuple[int, int] = (16, 32), encode_sleep_s: float = 0.0, step_sleep_s: float = 0.0):
        self.size = size
        self.encode_sleep_s = encode_sleep_s
        self.step_sleep_s = step_sleep_s

    def preprocess(self, images, channels, intrinsics, cam_to_ego):
        h, w = self.size
        x = torch.stack([
            F.interpolate(torch.from_numpy(im).permute(2, 0, 1)[None].float() / 255.0, size=(h, w), mode="bilinear",
                          align_corners=False)[0] for im in images])[None]  # (1, N, 3, h, w)
        k = np.array(intrinsics, np.float32)
        for i, im in enumerate(images):
            k[i, 0] *= w / im.shape[1]
            k[i, 1] *= h / im.shape[0]
        return x, k, np.asarray(cam_to_ego, np.float32)

    def encode(self, x):
        if self.encode_sleep_s:
            time.sleep(self.encode_sleep_s)
        feats = x.mean(dim=(3, 4), keepdim=True).numpy()  # (1, N, 3, 1, 1)
        seg = (x[0].mean(dim=1)[:, ::2, ::2] > 0.5).to(torch.uint8).numpy()  # (N, h/2, w/2)
        return feats, seg

    def new_state(self):
        return {"count": 0}

    def step(self, feats, inputs, state):
        if self.step_sleep_s:
            time.sleep(self.step_sleep_s)
        count = state["count"] + 1
        return {"count": count, "cams": int(inputs.camera_mask.sum())}, {"count": count}

    def decode(self, outputs):
        c = float(outputs["count"])
        dets = DetectionArrays("ego", np.array([[c, 0, 0, 2, 4, 1.5, 0, 1, 0]], np.float32), [0.5], [0], ["car"])
        return dets, [Polyline("lane_divider", np.array([[0.0, 0.0], [c, 0.0]]))]

    def state_to_bytes(self, state):
        return json.dumps(state).encode()

    def state_from_bytes(self, data):
        return json.loads(data.decode())


class TrackingCountingModel(CountingModel):
    """CountingModel with a tracker (perception.tracking): its one car's velocity is the track's."""

    def new_tracker(self):
        from perception.tracking import BoxTracker, TrackingConfig

        return BoxTracker(TrackingConfig(gate_m=5.0))  # the car moves 2 m per tick in the world (24 m/s)

    def decode(self, outputs, track_filter=None):
        dets, lines = super().decode(outputs)
        if track_filter is not None:
            boxes, scores = track_filter(torch.from_numpy(dets.boxes).double(), torch.from_numpy(dets.scores),
                                         torch.from_numpy(dets.labels))
            dets = DetectionArrays("ego", boxes.float().numpy(), scores.numpy(), dets.labels, dets.names,
                                   track_ids=track_filter.track_ids)
        return dets, lines


def make_frame_set(frame_id: int, scene: str = "scene-a", size=(24, 40), missing=(), t0_us: int = 1_000_000,
                   new_scene: bool = False, sample_token: str | None = None, wall_clock: bool = False) -> FrameSet:
    """A synthetic frame set; ego drives along x at 10 m/s; `wall_clock` stamps it with now."""
    ts = int(time.time() * 1e6) if wall_clock else t0_us + frame_id * 83_333
    ego = Pose(np.array([1.0 * frame_id, 2.0, 0.0]), Quaternion(axis=[0, 0, 1], angle=0.1))
    rng = np.random.default_rng(frame_id)
    cams = []
    for ch in CAMERA_CHANNELS:
        if ch in missing:
            continue
        k = np.array([[50.0, 0, size[1] / 2], [0, 50.0, size[0] / 2], [0, 0, 1]])
        cams.append(CameraFrame(ch, frame_id, ts, rng.integers(0, 255, size + (3,), dtype=np.uint8), k,
                                Pose(np.array([1.0, 0, 1.5]), Quaternion()), ego, scene,
                                sample_token=sample_token, is_key_frame=sample_token is not None))
    return FrameSet(tuple(cams), tuple(missing), ego, EgoKinematics(np.array([10.0, 0, 0]), np.zeros(3), 0.0), new_scene,
                    frame_id=frame_id, scene=scene, timestamp_us=ts, sample_token=sample_token)


@dataclass
class ListSource:
    """A replay-like (or, with is_live, live-like) source over prepared frame sets."""

    sets: list
    is_live: bool = False
    period_s: float = 0.0  # live pacing between sets

    def frame_sets(self):
        for fs in self.sets:
            if self.period_s:
                time.sleep(self.period_s)
            yield fs

    def describe(self) -> dict:
        return {"kind": "list", "n": len(self.sets), "live": self.is_live}


class LiveFakeSource:
    """Live: frame sets stamped with the wall clock at `rate_hz` (generated on the fly)."""

    is_live = True

    def __init__(self, n: int, rate_hz: float = 12.0, size=(24, 40)):
        self.n, self.rate_hz, self.size = n, rate_hz, size

    def frame_sets(self):
        t0 = time.time()
        for i in range(self.n):
            delay = t0 + i / self.rate_hz - time.time()
            if delay > 0:
                time.sleep(delay)
            yield make_frame_set(i, size=self.size, wall_clock=True, new_scene=(i == 0))

    def describe(self) -> dict:
        return {"kind": "live-fake", "n": self.n, "rate_hz": self.rate_hz}


class LiveCameraSource:
    """Live raw camera frames on the wall clock: each cycle's cameras fire `offset_us` apart and
    arrive at their exposure time (arrival_ns set), as the simulated vehicle's bus does.
    `drop` maps cycle -> channels that never arrive; `pause_after` cycle -> seconds of silence, and after
    them, while `resume_when()` is false, more (up to MAX_PAUSE_S in all)."""

    is_live = True
    period_us = 83_333
    MAX_PAUSE_S = 120.0

    def __init__(self, n: int, drop: dict[int, tuple[str, ...]] | None = None, offset_us: int = 6_000,
                 size=(24, 40), pause_after: dict[int, float] | None = None, resume_when=None):
        self.n, self.drop, self.size = n, drop or {}, size
        self.pause_after = pause_after or {}
        self.resume_when = resume_when
        self.channel_offsets_us = {c: offset_us * i for i, c in enumerate(CAMERA_CHANNELS)}
        self.started_cycles: list[int] = []

    def camera_frames(self):
        from dataclasses import replace

        t0 = time.time() + 0.05
        for i in range(self.n):
            self.started_cycles.append(i)
            fs = make_frame_set(i, size=self.size, new_scene=(i == 0))
            for c in fs.cameras:
                due = t0 + (i * self.period_us + self.channel_offsets_us[c.channel]) / 1e6
                delay = due - time.time()
                if delay > 0:
                    time.sleep(delay)
                if c.channel in self.drop.get(i, ()):
                    continue
                yield replace(c, timestamp_us=int(due * 1e6), arrival_ns=time.time_ns())
            if i in self.pause_after:
                start = time.time()
                time.sleep(self.pause_after[i])
                while (self.resume_when is not None and not self.resume_when()
                       and time.time() - start < self.MAX_PAUSE_S):
                    time.sleep(0.1)
                t0 += time.time() - start

    def frame_sets(self):  # pragma: no cover - the runtime synchronises raw frames itself
        raise AssertionError("a live source's raw frames are synchronised by the runtime")

    def describe(self) -> dict:
        return {"kind": "live-cameras", "n": self.n}


class RestartedActorAnswers:
    """A LiveCameraSource's resume condition: Ray has restarted the stage actor `name` (its checkpoint store
    counted the restart), the new actor answers a call, and `settle_s` more have passed: the driver learns
    of the death only when a tick fails (~1 s for a queued call) and then waits for the actor itself.
    Holds actor handles only, so it travels with the source to the ingest actor."""

    def __init__(self, store, name: str, actor, settle_s: float = 3.0):
        self.store, self.name, self.actor, self.settle_s = store, name, actor, settle_s
        self.back_at: float | None = None

    def __call__(self) -> bool:
        import ray

        if self.back_at is None:
            try:
                if ray.get(self.store.restarts.remote(), timeout=5.0).get(self.name, 0) < 1:
                    return False
                ray.get(self.actor.node_id.remote(), timeout=5.0)
            except Exception:  # noqa: BLE001 - still restarting (unavailable, or a timeout)
                return False
            self.back_at = time.monotonic()
        return time.monotonic() - self.back_at >= self.settle_s


def encode_as_they_arrive(stage, cameras, batch_sizes=(1, 2, 3)):
    """BackboneStage.run_cameras over the cameras in uneven batches (as dynamic batching sends them)."""
    out, i, sizes = [], 0, list(batch_sizes)
    while i < len(cameras):
        batch = cameras[i:i + sizes[0]]
        sizes = sizes[1:] + sizes[:1]
        out += stage.run_cameras([c.image for c in batch], [c.channel for c in batch],
                                 np.stack([c.intrinsic for c in batch]), np.stack([c.sensor_to_ego.matrix for c in batch]))
        i += len(batch)
    return out
