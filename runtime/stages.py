"""The compute of each pipeline stage as plain classes (no Ray): the actors in actors.py wrap them.

The stages call the model through the protocol of runtime/model_protocol.py (`PerceptionModel`, re-exported
here); `runtime/model_adapter.py` puts perception/'s BEVStreamModel behind it, runtime/oracle.py the log's
annotations, tests a small model with the same methods. Keeping the stages Ray-free lets the offline
baseline (bench/runtime.py) and the tests run the exact same code in one process.
"""
from __future__ import annotations

import pickle
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

import numpy as np

from replay.jpeg import decode_encoded
from runtime.model_protocol import BevInputs, PerceptionModel
from schema.messages import CAMERA_CHANNELS, EncodedImage, FrameHeader, FrameSet, Pose, StageTiming
from schema.results import DetectionArrays, Polyline, TickResult

NCAM = len(CAMERA_CHANNELS)


@dataclass(frozen=True)
class TickMeta(FrameHeader):
    """The small, by-value part of a frame set that travels with its image references (header: FrameHeader)."""

    oldest_timestamp_us: int
    channels: tuple[str, ...]  # present cameras, CAMERA_CHANNELS order
    missing: tuple[str, ...]
    intrinsics: np.ndarray  # (N, 3, 3) float64 of the images as delivered
    sensor_to_ego: np.ndarray  # (N, 4, 4) float64
    ego_to_global: Pose
    kinematics: np.ndarray  # (7,) float32
    new_scene: bool

    @classmethod
    def from_frame_set(cls, fs: FrameSet) -> "TickMeta":
        return cls(
            frame_id=fs.frame_id,
            scene=fs.scene,
            timestamp_us=fs.timestamp_us,
            oldest_timestamp_us=fs.oldest_timestamp_us,
            sample_token=fs.sample_token,
            channels=fs.channels,
            missing=tuple(fs.missing),
            intrinsics=np.stack([np.asarray(c.intrinsic, np.float64) for c in fs.cameras]),
            sensor_to_ego=np.stack([c.sensor_to_ego.matrix for c in fs.cameras]),
            ego_to_global=fs.ego_to_global,
            kinematics=fs.kinematics.as_array(),
            new_scene=fs.new_scene,
            timings=tuple(fs.timings),
        )

    def without(self, channels: Sequence[str]) -> "TickMeta":
        """This tick with `channels` gone from its cameras (calibration rows included) and counted missing."""
        keep = [i for i, c in enumerate(self.channels) if c not in channels]
        gone = set(channels) | set(self.missing)
        return replace(self, channels=tuple(self.channels[i] for i in keep), intrinsics=self.intrinsics[keep],
                       sensor_to_ego=self.sensor_to_ego[keep], missing=tuple(c for c in CAMERA_CHANNELS if c in gone))


@dataclass(frozen=True)
class FeaturePacket:
    """Backbone output of one tick, all NCAM camera slots (absent cameras zero, mask False)."""

    feats: np.ndarray  # (1, NCAM, C, h, w) float32
    intrinsics: np.ndarray  # (1, NCAM, 3, 3) float32, canonical (rectified) intrinsics
    cam_to_ego: np.ndarray  # (1, NCAM, 4, 4) float32
    camera_mask: np.ndarray  # (1, NCAM) bool
    seg: np.ndarray  # (N_present, hs, ws) uint8 labels
    timing: StageTiming
    camera_timings: tuple[StageTiming, ...] = ()  # per-camera encoding: each camera's 'backbone_camera'
    lost: tuple[str, ...] = ()  # cameras whose image did not decode here (decode_images): missing from the tick
    decode_timing: StageTiming | None = None  # 'decode' of the set's encoded images, when it had any


@dataclass(frozen=True)
class CameraFeatures:
    """Backbone output of one camera (per-camera encoding, as each camera arrives)."""

    channel: str
    feats: np.ndarray  # (C, h, w) float32
    intrinsic: np.ndarray  # (3, 3) float32, canonical (rectified)
    cam_to_ego: np.ndarray  # (4, 4) float32
    seg: np.ndarray  # (hs, ws) uint8 labels (seg_stride applied)
    timing: StageTiming  # stage 'backbone_camera'


def packet_from_cameras(cams: Sequence[CameraFeatures], channels: Sequence[str]) -> FeaturePacket:
    """Per-camera backbone outputs of one frame set -> the FeaturePacket BackboneStage.run would give.

    The backbone treats cameras as independent batch items, so this equals encoding them together
    (up to float rounding of the batched kernels). Its 'backbone' timing is the last camera's
    encoding, the one on the tick's critical path; every camera's stays as 'backbone_camera'."""
    if [c.channel for c in cams] != list(channels):
        raise ValueError(f"camera features {[c.channel for c in cams]} do not match the set's cameras {list(channels)}")
    if not cams:
        raise ValueError("a frame set with no camera features")
    slots = [CAMERA_CHANNELS.index(c) for c in channels]
    full = np.zeros((1, NCAM) + cams[0].feats.shape, np.float32)  # (1, NCAM, C, h, w)
    intr = np.tile(np.eye(3, dtype=np.float32), (1, NCAM, 1, 1))  # (1, NCAM, 3, 3)
    ext = np.tile(np.eye(4, dtype=np.float32), (1, NCAM, 1, 1))  # (1, NCAM, 4, 4)
    mask = np.zeros((1, NCAM), bool)
    for slot, cam in zip(slots, cams):
        full[0, slot] = cam.feats
        intr[0, slot] = cam.intrinsic
        ext[0, slot] = cam.cam_to_ego
        mask[0, slot] = True
    seg = np.stack([c.seg for c in cams])  # (N_present, hs, ws)
    last = max(cams, key=lambda c: c.timing.end_ns).timing
    return FeaturePacket(full, intr, ext, mask, seg, StageTiming("backbone", last.start_ns, last.end_ns),
                         tuple(c.timing for c in cams))


def warmup_meta(size: tuple[int, int] = (198, 352)) -> TickMeta:
    """A synthetic six-camera tick (level cameras around the rig) to run once before the stream:
    first calls allocate and plan, and should not land on the first real tick's latency."""
    h, w = size
    k = np.array([[w / 2.0, 0, w / 2.0], [0, w / 2.0, h / 2.0], [0, 0, 1]])
    base = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])  # optical -> ego, looking forward
    exts = []
    for i in range(NCAM):
        yaw = -i * np.pi / 3
        rz = np.array([[np.cos(yaw), -np.sin(yaw), 0], [np.sin(yaw), np.cos(yaw), 0], [0, 0, 1]])
        e = np.eye(4)
        e[:3, :3] = rz @ base
        e[:3, 3] = [1.0, 0.0, 1.5]
        exts.append(e)
    return TickMeta(frame_id=-1, scene="warmup", timestamp_us=0, oldest_timestamp_us=0, sample_token=None,
                    channels=CAMERA_CHANNELS, missing=(), intrinsics=np.stack([k] * NCAM), sensor_to_ego=np.stack(exts),
                    ego_to_global=Pose.identity(), kinematics=np.zeros(7, np.float32), new_scene=True, timings=())


def decode_images(images: Sequence[Any], meta: TickMeta, pool: ThreadPoolExecutor | None = None,
                  shrink: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray] | None] | None = None
                  ) -> tuple[list[np.ndarray], TickMeta, tuple[str, ...]]:
    """A tick's images with every EncodedImage decoded and, with `shrink` (runtime.prescale.Prescaler.shrink: the
    rectifier's own anti-aliased shrink, done here so it runs in the pool too), shrunk, its intrinsic with it.
    In `pool`'s threads when given (simplejpeg and torch free the GIL). A camera whose JPEG does not decode
    leaves the tick as a missing camera, as it would from a source that decodes it itself. -> (the images,
    the tick without the lost cameras and with the new intrinsics, the lost channels); ValueError (a
    'bad_input' drop) when no camera is left."""
    encoded = [i for i, im in enumerate(images) if isinstance(im, EncodedImage)]
    if not encoded:
        return list(images), meta, ()

    def attempt(i: int) -> tuple[np.ndarray, np.ndarray] | ValueError:
        try:
            image, k = decode_encoded(images[i]), meta.intrinsics[i]
        except ValueError as e:  # simplejpeg (strict) raises ValueError on corrupt data
            return e
        smaller = shrink(image, k) if shrink is not None else None
        return (image, k) if smaller is None else smaller

    done = list(pool.map(attempt, encoded)) if pool is not None else [attempt(i) for i in encoded]
    out, intrinsics = list(images), np.array(meta.intrinsics, np.float64)
    for i, got in zip(encoded, done):
        if not isinstance(got, ValueError):
            out[i], intrinsics[i] = got
    meta = replace(meta, intrinsics=intrinsics)
    lost = tuple(meta.channels[i] for i, got in zip(encoded, done) if isinstance(got, ValueError))
    if not lost:
        return out, meta, ()
    if len(lost) == len(images):
        raise ValueError(f"no camera image of the set decodes ({', '.join(lost)}): {done[0]}")
    return [im for im, c in zip(out, meta.channels) if c not in lost], meta.without(lost), lost


def rectify_config_of(model: PerceptionModel) -> Any:
    """The model's rectification settings (BEVStreamAdapter's network), or None for a model without one."""
    return getattr(getattr(getattr(model, "model", None), "config", None), "rectify", None)


def _prescaler_of(model: PerceptionModel) -> Any:
    """The rectifier's shrink for `model`'s own rectification settings, or None."""
    rect = rectify_config_of(model)
    if rect is None:
        return None
    from runtime.prescale import Prescaler

    return Prescaler(rect)


class BackboneStage:
    """Preprocessing + per-camera backbone + image segmentation, all present cameras in one call."""

    def __init__(self, model: PerceptionModel, seg_stride: int = 1, decode_threads: int = 1):
        self.model = model
        self.seg_stride = seg_stride
        # a replay's encoded images (schema EncodedImage) decode here, a set's cameras in this many threads at once
        self.decode_pool = ThreadPoolExecutor(decode_threads, thread_name_prefix="bevstream-decode") if decode_threads > 1 else None
        self.prescaler = _prescaler_of(model)  # decoded images shrink in the pool too, before the rectifier

    def warmup(self, size: tuple[int, int] = (198, 352)) -> FeaturePacket:
        meta = warmup_meta(size)
        return self.run([np.full(size + (3,), 128, np.uint8)] * NCAM, meta)

    def run(self, images: list, meta: TickMeta) -> FeaturePacket:
        """(H, W, 3) uint8 images or EncodedImages (decoded first, as 'decode') of `meta`'s cameras -> features."""
        decode_start = time.time_ns()
        encoded = any(isinstance(im, EncodedImage) for im in images)
        images, meta, lost = decode_images(images, meta, self.decode_pool,
                                           None if self.prescaler is None else self.prescaler.shrink)
        start = time.time_ns()
        decode_timing = StageTiming("decode", decode_start, start) if encoded else None
        x, k, c2e = self.model.preprocess(list(images), meta.channels, meta.intrinsics, meta.sensor_to_ego)  # (1, N, 3, H, W)
        feats, seg = self.model.encode(x)  # (1, N, C, h, w), (N, hs, ws)
        feats = np.asarray(feats, np.float32)
        slots = [CAMERA_CHANNELS.index(c) for c in meta.channels]
        full = np.zeros((1, NCAM) + feats.shape[2:], np.float32)  # (1, NCAM, C, h, w)
        full[0, slots] = feats[0]
        intr = np.tile(np.eye(3, dtype=np.float32), (1, NCAM, 1, 1))  # (1, NCAM, 3, 3)
        intr[0, slots] = k
        ext = np.tile(np.eye(4, dtype=np.float32), (1, NCAM, 1, 1))  # (1, NCAM, 4, 4)
        ext[0, slots] = c2e
        mask = np.zeros((1, NCAM), bool)
        mask[0, slots] = True
        seg = np.ascontiguousarray(np.asarray(seg, np.uint8)[:, :: self.seg_stride, :: self.seg_stride])
        return FeaturePacket(full, intr, ext, mask, seg, StageTiming("backbone", start, time.time_ns()), lost=lost,
                             decode_timing=decode_timing)

    def run_cameras(self, images: Sequence[np.ndarray], channels: Sequence[str], intrinsics: np.ndarray,
                    sensor_to_ego: np.ndarray) -> list[CameraFeatures]:
        """Cameras encoded as they arrive, any number at once: (H, W, 3) uint8 images, their channels,
        (N, 3, 3) intrinsics and (N, 4, 4) sensor->ego -> one CameraFeatures per camera."""
        start = time.time_ns()
        x, k, c2e = self.model.preprocess(list(images), tuple(channels), np.asarray(intrinsics, np.float64),
                                          np.asarray(sensor_to_ego, np.float64))  # (1, N, 3, H, W)
        feats, seg = self.model.encode(x)  # (1, N, C, h, w), (N, hs, ws)
        feats = np.asarray(feats, np.float32)[0]
        seg = np.asarray(seg, np.uint8)[:, :: self.seg_stride, :: self.seg_stride]
        timing = StageTiming("backbone_camera", start, time.time_ns())
        return [CameraFeatures(ch, feats[i], np.asarray(k[i], np.float32), np.asarray(c2e[i], np.float32),
                               np.ascontiguousarray(seg[i]), timing) for i, ch in enumerate(channels)]

    def warmup_cameras(self, size: tuple[int, int] = (198, 352)) -> int:
        """run_cameras once per batch size 1..NCAM (each size plans its own kernels); returns the calls."""
        meta = warmup_meta(size)
        image = np.full(size + (3,), 128, np.uint8)
        for n in range(1, NCAM + 1):
            self.run_cameras([image] * n, meta.channels[:n], meta.intrinsics[:n], meta.sensor_to_ego[:n])
        return NCAM


class BevStage:
    """BEV encoder + video module + heads; owns the temporal state and the tracker (both reset on a new
    scene, both kept in a checkpoint)."""

    def __init__(self, model: PerceptionModel, state: Any = None,
                 wrap_track_filter: Callable[[Any, TickMeta], Any] | None = None):
        self.model = model
        self.state = state if state is not None else model.new_state()
        new_tracker = getattr(model, "new_tracker", None)  # optional: test doubles have none
        self.tracker = new_tracker() if new_tracker is not None else None
        self.wrap_track_filter = wrap_track_filter  # (tick's track filter, meta) -> the filter decode uses (e.g. a recorder)
        self.last_outputs: Any = None  # the model's raw step outputs of the last tick, for in-process evaluation

    def run(self, packet: FeaturePacket, meta: TickMeta) -> TickResult:
        start = time.time_ns()
        if packet.lost:  # cameras whose image the backbone stage could not decode
            meta = meta.without(packet.lost)
        if meta.new_scene:
            self.state = self.model.new_state()
        inputs = BevInputs(
            intrinsics=packet.intrinsics,
            cam_to_ego=packet.cam_to_ego,
            camera_mask=packet.camera_mask,
            ego_to_global=meta.ego_to_global.matrix[None],
            timestamp_s=np.array([meta.timestamp_us / 1e6], np.float64),
            kinematics=meta.kinematics[None].astype(np.float32),
            reset=np.array([meta.new_scene]),
            scene=meta.scene,
            sample_token=meta.sample_token,
            timestamp_us=meta.timestamp_us,
        )
        outputs, self.state = self.model.step(packet.feats, inputs, self.state)
        self.last_outputs = outputs
        if self.tracker is None:
            dets, lines = self.model.decode(outputs)
        else:
            track_filter = self.tracker.track_filter(meta.ego_to_global.matrix, meta.timestamp_us / 1e6,
                                                     new_scene=meta.new_scene)
            if self.wrap_track_filter is not None:
                track_filter = self.wrap_track_filter(track_filter, meta)
            dets, lines = self.model.decode(outputs, track_filter)
        # The outputs in the global frame are part of the step's compute (the offline loop converts them too):
        # inside the 'bev' timing, so that the hand-over to the driver ('deliver') is only the runtime's own cost.
        global_frame = (dets.to_global(meta.ego_to_global), tuple(p.to_global(meta.ego_to_global) for p in lines))
        timing = StageTiming("bev", start, time.time_ns())
        return make_tick_result(meta, packet, dets, lines, timing, global_frame)

    def warmup(self, packet: FeaturePacket) -> None:
        """One step on a warm-up packet (and the model's own post-processing warm-up, if it has one);
        the temporal state is fresh afterwards."""
        self.run(packet, warmup_meta())
        warm_up = getattr(self.model, "warm_up", None)  # optional: test doubles have none
        if warm_up is not None:
            warm_up()
        self.state = self.model.new_state()
        if self.tracker is not None:
            self.tracker.reset()

    def snapshot(self) -> tuple[Any, dict | None]:
        """What a checkpoint keeps, taken now: the temporal state (replaced, never mutated, by a step) and a
        copy of the tracks (mutated by each tick), so it can be serialised while the next ticks run."""
        return self.state, None if self.tracker is None else self.tracker.snapshot()

    def checkpoint(self, snapshot: tuple[Any, dict | None] | None = None) -> bytes:
        """A snapshot() (default: one taken now) as bytes: the model's state bytes, with the tracks beside
        them when the model tracks."""
        state, tracks = snapshot if snapshot is not None else self.snapshot()
        data = self.model.state_to_bytes(state)
        return data if tracks is None else pickle.dumps({"state": data, "tracks": tracks})

    def restore(self, data: bytes) -> None:
        if self.tracker is None:
            self.state = self.model.state_from_bytes(data)
            return
        saved = pickle.loads(data)  # our own checkpoint, from the stream's StateStore
        self.state = self.model.state_from_bytes(saved["state"])
        self.tracker.restore(saved["tracks"])


def make_tick_result(meta: TickMeta, packet: FeaturePacket, dets: DetectionArrays, lines: list[Polyline], timing: StageTiming,
                     global_frame: tuple[DetectionArrays, tuple[Polyline, ...]] | None = None) -> TickResult:
    """Model output of one tick -> the TickResult message (ego and global frame; `global_frame`: the
    detections and polylines already converted to it)."""
    dets_global, lines_global = global_frame if global_frame is not None else (
        dets.to_global(meta.ego_to_global), tuple(p.to_global(meta.ego_to_global) for p in lines))
    return TickResult(
        frame_id=meta.frame_id,
        scene=meta.scene,
        timestamp_us=meta.timestamp_us,
        oldest_timestamp_us=meta.oldest_timestamp_us,
        sample_token=meta.sample_token,
        ego_to_global=meta.ego_to_global,
        detections_ego=dets,
        detections_global=dets_global,
        polylines_ego=tuple(lines),
        polylines_global=lines_global,
        seg_channels=meta.channels,
        seg=packet.seg,
        missing=meta.missing,
        new_scene=meta.new_scene,
        timings=meta.timings + packet.camera_timings + ((packet.decode_timing,) if packet.decode_timing else ())
        + (packet.timing, timing),
        valid=True,
    )
