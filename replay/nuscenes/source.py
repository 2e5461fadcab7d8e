"""Log replay: any nuScenes dataroot, read through the devkit, as synchronised six-camera FrameSets.

Scene by scene, in timestamp order. Keyframe cycles are the six camera sample_data of each sample;
sweep cycles group the other camera sample_data by 12 Hz cycle (replay.sync.cluster_cycles, each
camera shifted by its firing offset measured on the scene's keyframes). Nothing assumes the data is
synthetic: image files that are absent (real nuScenes without sweeps) make their camera missing,
cycles with no image at all are skipped, and each scene says once what is absent. Ego kinematics
come from the scene's dense ego pose track (every sample_data's ego_pose), not from the images.
"""
from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
from PIL import Image

from replay.jpeg import dct_scale, decode_jpeg_at, encoded_jpeg, is_jpeg, jpeg_size
from replay.kinematics import kinematics_in_track
from replay.sync import CYCLE_US, cluster_cycles
from schema.camera import scale_intrinsic
from schema.messages import CAMERA_CHANNELS, CameraFrame, FrameSet, Pose, StageTiming
from schema.results import DropRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SkipRecord:
    """A cycle the source could not turn into a FrameSet, and why."""

    scene: str
    timestamp_us: int
    reason: str


@dataclass
class ReplayStats:
    """What a replay adds to summary.json (`source_stats`): with realtime pacing, each scene's clock mapping.

    The pacer starts a scene's first cycle at wall time `wall_ns` (time.time_ns(), the clock of the runtime's
    StageTimings) and paces the rest from it, so log time `log_us` + (w - wall_ns) / 1000 * speed is what the
    log's clock read at wall time w: streaming evaluation maps each tick's delivery onto the log with it."""

    clock: list[dict] = field(default_factory=list)  # per scene: {"scene", "log_us", "wall_ns", "speed"}
    late_skipped: int = 0  # realtime, skip_late: cycles passed over because a newer one was already due

    def summary(self) -> dict:
        out = {"clock": list(self.clock)} if self.clock else {}
        if self.late_skipped:
            out["late_skipped"] = self.late_skipped
        return out


@dataclass
class _Cycle:
    """One planned cycle: its camera sample_data tokens (present files only) and reference time."""

    timestamp_us: int
    ego_pose_token: str
    sd_tokens: dict[str, str]  # channel -> sample_data token, image file present
    absent: tuple[str, ...]  # channels with a sample_data row whose file is absent, or no row
    sample_token: str | None
    track_index: int = -1


def load_image(path: str | Path, min_size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode an image file to (H, W, 3) uint8 RGB; raises OSError/ValueError if undecodable.
    With `min_size` (h, w), a JPEG decodes at a DCT scale (`decode_image`)."""
    return decode_image(path, None if min_size is None else (lambda full: min_size))[0]


def decode_image(path: str | Path, min_size_for: Callable[[tuple[int, int]], tuple[int, int]] | None = None
                 ) -> tuple[np.ndarray, tuple[int, int]]:
    """(H, W, 3) uint8 RGB and the file's full (H, W), in one read; raises OSError/ValueError if undecodable.

    JPEGs decode with libjpeg-turbo (simplejpeg: ~1.3-1.7x Pillow here; strict, so corrupt data raises
    instead of decoding to grey). With `min_size_for(full (H, W)) -> (h, w)`, a JPEG is decoded at the
    coarsest of libjpeg's power-of-two DCT scales (1/2, 1/4, 1/8) that is still at least that big: a
    1600x900 nuScenes image at 1/2 costs about a quarter of a full decode. Pixel centres keep the
    convention of `schema.camera.scale_intrinsic` (a 1/s image's pixel i covers source pixels
    s*i .. s*i+s-1). Other formats decode in full with Pillow."""
    data = Path(path).read_bytes()
    if not is_jpeg(data):
        return _decode_other(path)
    full = jpeg_size(data)
    return decode_jpeg_at(data, full, dct_scale(full, min_size_for)), full


def _decode_other(path: str | Path) -> tuple[np.ndarray, tuple[int, int]]:
    with Image.open(path) as im:
        full = (im.height, im.width)
        im.load()
        if im.mode != "RGB":  # convert() copies even when nothing changes
            im = im.convert("RGB")
        return np.asarray(im, dtype=np.uint8), full


class NuScenesSource:
    """Replays a nuScenes dataroot (keyframes, or keyframes and sweeps) as FrameSets."""

    is_live = False

    def __init__(
        self,
        dataroot: str | Path,
        version: str,
        scenes: Sequence[str] | None = None,
        keyframes_only: bool = False,
        realtime: bool = False,
        speed: float = 1.0,
        skip_late: bool = True,
        split: str | None = None,
        tolerance_us: int = CYCLE_US // 4,
        first_frame_id: int = 0,
    ):
        root = Path(dataroot)
        if not root.is_dir():
            raise FileNotFoundError(f"nuScenes dataroot not found: {root}")
        if not (root / version).is_dir():
            raise FileNotFoundError(f"nuScenes version folder not found: {root / version}")
        if speed <= 0:
            raise ValueError(f"speed must be positive, got {speed}")
        from nuscenes.nuscenes import NuScenes  # lazy: the devkit takes ~3 s to import

        self.dataroot = root
        self.version = version
        self.keyframes_only = keyframes_only
        self.realtime = realtime
        self.speed = float(speed)
        self.skip_late = bool(skip_late)
        self.tolerance_us = int(tolerance_us)
        self.first_frame_id = int(first_frame_id)
        self.nusc = NuScenes(version=version, dataroot=str(root), verbose=False)
        self.scene_records = self._select_scenes(scenes, split)
        self.split = split
        self.skipped: list[SkipRecord] = []
        self._plans: dict[str, tuple[list[_Cycle], list[int], list[Pose]]] = {}
        self._needed_size: Callable[[np.ndarray, tuple[int, int]], tuple[int, int]] | None = None
        self._defer = False  # decode_for(defer=True): JPEGs left encoded for the backbone stage
        self._pool = None  # decode_for(workers > 1): a thread pool that decodes a set's cameras at once
        self.stats = ReplayStats()

    def decode_for(self, needed_size: Callable[[np.ndarray, tuple[int, int]], tuple[int, int]] | None,
                   workers: int = 1, defer: bool = False) -> None:
        """Let the consumer say how much of each image it uses: `needed_size(intrinsic, (H, W))` -> (h, w).
        JPEGs then decode at the coarsest DCT scale still that big (`load_image`), each camera's
        intrinsic scaled to the decoded size, and with `workers` > 1 a set's cameras decode in that many
        threads at once. With `defer`, JPEGs are not decoded here: each camera's image is an EncodedImage
        (header read, intrinsic scaled alike) for the backbone stage to decode. None: full size, one camera
        after another, again."""
        self._needed_size = needed_size
        self._defer = defer and needed_size is not None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if needed_size is not None and workers > 1:
            self._pool = ThreadPoolExecutor(workers, thread_name_prefix="bevstream-decode")

    # -- scene selection ------------------------------------------------------------------------
    def _select_scenes(self, scenes: Sequence[str] | None, split: str | None) -> list[dict]:
        by_name = {s["name"]: s for s in self.nusc.scene}
        if scenes is not None:
            if isinstance(scenes, str):
                scenes = [scenes]
            unknown = [n for n in scenes if n not in by_name]
            if unknown:
                raise ValueError(f"unknown scene(s) {unknown} in {self.dataroot / self.version}; "
                                 f"available: {sorted(by_name)}")
            records = [by_name[n] for n in scenes]
        else:
            records = list(self.nusc.scene)
        if split is not None:
            from nuscenes.utils.splits import create_splits_scenes

            splits = create_splits_scenes()
            if split not in splits:
                raise ValueError(f"unknown split {split!r}; the devkit's splits are {sorted(splits)}")
            wanted = set(splits[split])
            records = [r for r in records if r["name"] in wanted]
        return records

    @property
    def scene_names(self) -> list[str]:
        return [s["name"] for s in self.scene_records]

    # -- planning (tables only, no image decoding) -----------------------------------------------
    def _scene_sample_data(self, scene: dict) -> list[dict]:
        """Every sample_data row (all modalities) of a scene, through its samples."""
        if not hasattr(self, "_sd_by_sample"):
            self._sd_by_sample: dict[str, list[dict]] = {}
            for sd in self.nusc.sample_data:
                self._sd_by_sample.setdefault(sd["sample_token"], []).append(sd)
        out = []
        token = scene["first_sample_token"]
        while token:
            out.extend(self._sd_by_sample.get(token, []))
            token = self.nusc.get("sample", token)["next"]
        return out

    def _plan(self, scene: dict) -> tuple[list[_Cycle], list[int], list[Pose]]:
        """The scene's cycles in time order and its ego pose track (timestamps, poses)."""
        if scene["token"] in self._plans:
            return self._plans[scene["token"]]
        nusc, name = self.nusc, scene["name"]
        sds = self._scene_sample_data(scene)
        cams = [sd for sd in sds if sd["channel"] in CAMERA_CHANNELS]
        exists = {sd["token"]: os.path.isfile(self.dataroot / sd["filename"]) for sd in cams}

        # Dense ego pose track over every sample_data of the scene (finite poses only).
        track: dict[int, Pose] = {}
        for sd in sorted(sds, key=lambda r: r["timestamp"]):
            pose = Pose.from_record(nusc.get("ego_pose", sd["ego_pose_token"]))
            if pose.is_finite() and sd["timestamp"] not in track:
                track[sd["timestamp"]] = pose
        track_ts = sorted(track)
        track_poses = [track[t] for t in track_ts]
        index_of = {t: i for i, t in enumerate(track_ts)}

        samples = []
        token = scene["first_sample_token"]
        while token:
            samples.append(nusc.get("sample", token))
            token = samples[-1]["next"]
        # Each camera's firing offset within the cycle, relative to the keyframe (lidar) time.
        offsets = {}
        for ch in CAMERA_CHANNELS:
            d = [nusc.get("sample_data", s["data"][ch])["timestamp"] - s["timestamp"] for s in samples if ch in s["data"]]
            offsets[ch] = int(np.median(d)) if d else 0

        cycles: list[tuple[float, _Cycle]] = []
        for s in samples:
            rows = [nusc.get("sample_data", s["data"][ch]) for ch in CAMERA_CHANNELS if ch in s["data"]]
            ref = nusc.get("sample_data", s["data"]["LIDAR_TOP"]) if "LIDAR_TOP" in s["data"] else None
            if ref is None or ref["timestamp"] != s["timestamp"]:
                ref = min(rows, key=lambda r: r["timestamp"]) if rows else None
            if ref is None:
                continue
            cycles.append((s["timestamp"], self._cycle(rows, exists, ref, s["token"])))
        if not self.keyframes_only:
            sweeps = [sd for sd in cams if not sd["is_key_frame"]]
            groups = cluster_cycles([(sd["channel"], sd["timestamp"]) for sd in sweeps], offsets, self.tolerance_us)
            for g in groups:
                rows = [sweeps[i] for i in g]
                ref = min(rows, key=lambda r: r["timestamp"])
                ct = float(np.mean([r["timestamp"] - offsets[r["channel"]] for r in rows]))
                cycles.append((ct, self._cycle(rows, exists, ref, None)))
        cycles.sort(key=lambda c: c[0])

        planned = []
        for _, cyc in cycles:
            if cyc.timestamp_us not in index_of:
                self.skipped.append(SkipRecord(name, cyc.timestamp_us, "non-finite ego pose at the reference time"))
                log.warning("%s: cycle at %d skipped: non-finite ego pose", name, cyc.timestamp_us)
                continue
            if not cyc.sd_tokens:
                continue  # no image file at all in this cycle: counted in the summary below
            cyc.track_index = index_of[cyc.timestamp_us]
            planned.append(cyc)
        self._summarise_absent(name, cams, exists, cycles, planned)
        self._plans[scene["token"]] = (planned, track_ts, track_poses)
        return self._plans[scene["token"]]

    @staticmethod
    def _cycle(rows: list[dict], exists: dict[str, bool], ref: dict, sample_token: str | None) -> _Cycle:
        present = {r["channel"]: r["token"] for r in rows if exists[r["token"]]}
        absent = tuple(ch for ch in CAMERA_CHANNELS if ch not in present)
        return _Cycle(ref["timestamp"], ref["ego_pose_token"], present, absent, sample_token)

    def _summarise_absent(self, name: str, cams: list[dict], exists: dict, cycles: list, planned: list) -> None:
        """Say once per scene which camera files are absent and what is replayed instead."""
        key = [sd for sd in cams if sd["is_key_frame"]]
        sweeps = [sd for sd in cams if not sd["is_key_frame"]]
        key_absent = sum(not exists[sd["token"]] for sd in key)
        parts = []
        if not self.keyframes_only:
            sweep_absent = sum(not exists[sd["token"]] for sd in sweeps)
            if sweep_absent:
                what = "replaying keyframes only for those cycles" if sweep_absent == len(sweeps) else \
                    "their cameras count as missing"
                parts.append(f"{sweep_absent} of {len(sweeps)} camera sweep files absent; {what}")
        if key_absent:
            parts.append(f"{key_absent} of {len(key)} camera keyframe files absent (those cameras count as missing)")
        if parts:
            skipped = len(cycles) - len(planned)
            log.warning("%s: %s; %d of %d cycles have no image and are skipped, %d replayed",
                        name, "; ".join(parts), skipped, len(cycles), len(planned))

    def __len__(self) -> int:
        """Number of FrameSets planned (before any image turns out undecodable)."""
        return sum(len(self._plan(s)[0]) for s in self.scene_records)

    # -- iteration ---------------------------------------------------------------------------------
    def frame_sets(self) -> Iterator[FrameSet | DropRecord]:
        """Synchronised six-camera sets, scene by scene in timestamp order; paced if realtime.

        A realtime replay behaves as the car would: when the runtime asks for the next set and a newer cycle
        is already due (the runtime fell behind the log), the older ones are passed over, each as a
        DropRecord ('overload'), and the newest due one is loaded (`skip_late`; False: every cycle, late or
        not, so the replay falls further behind the log instead)."""
        frame_id = self.first_frame_id
        self.stats = ReplayStats()
        for scene in self.scene_records:
            cycles, track_ts, track_poses = self._plan(scene)
            due = None  # realtime: cycle index -> monotonic time it is due
            first = True
            for i, cyc in enumerate(cycles):
                if self.realtime:
                    if due is None:
                        due = self._pace(scene["name"], cycles)
                    if self.skip_late and i + 1 < len(cycles) and due(i + 1) <= time.monotonic():
                        self.stats.late_skipped += 1
                        yield self._late(scene["name"], cyc, frame_id)
                        frame_id += 1
                        continue
                    delay = due(i) - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                fs = self._load(scene["name"], cyc, frame_id, first, track_ts, track_poses)
                if fs is None:
                    continue
                yield fs
                del fs  # do not hold the last set (26 MB at 1600x900) while decoding the next
                frame_id += 1
                first = False

    def _pace(self, scene: str, cycles: list[_Cycle]) -> Callable[[int], float]:
        """Anchor a scene's clock now (recorded for streaming evaluation) -> cycle index -> monotonic due time."""
        wall0, ts0 = time.monotonic(), cycles[0].timestamp_us
        self.stats.clock.append({"scene": scene, "log_us": int(ts0), "wall_ns": time.time_ns(), "speed": self.speed})
        return lambda i: wall0 + (cycles[i].timestamp_us - ts0) * 1e-6 / self.speed

    def _late(self, scene: str, cyc: _Cycle, frame_id: int) -> DropRecord:
        return DropRecord("overload", "real-time replay: a newer cycle was already due when the runtime took the next "
                          "set (the runtime is behind the log)", frame_id=frame_id, scene=scene,
                          timestamp_us=cyc.timestamp_us, sample_token=cyc.sample_token)

    def _load(self, name: str, cyc: _Cycle, frame_id: int, new_scene: bool,
              track_ts: list[int], track_poses: list[Pose]) -> FrameSet | None:
        nusc = self.nusc
        start_ns = time.time_ns()
        cams = []
        present = [ch for ch in CAMERA_CHANNELS if ch in cyc.sd_tokens]
        sds = [nusc.get("sample_data", cyc.sd_tokens[ch]) for ch in present]
        css = [nusc.get("calibrated_sensor", sd["calibrated_sensor_token"]) for sd in sds]
        jobs = [(self.dataroot / sd["filename"], np.asarray(cs["camera_intrinsic"], dtype=np.float64)) for sd, cs in zip(sds, css)]
        if self._pool is not None and len(jobs) > 1:
            decoded = list(self._pool.map(self._try_decode, jobs))  # PIL decodes without the GIL
        else:
            decoded = [self._try_decode(job) for job in jobs]
        for ch, sd, cs, (path, _), got in zip(present, sds, css, jobs, decoded):
            if isinstance(got, Exception):
                log.warning("%s: undecodable image %s (%s); %s counts as missing", name, path, got, ch)
                continue
            image, intrinsic = got
            ego = Pose.from_record(nusc.get("ego_pose", sd["ego_pose_token"]))
            s2e = Pose.from_record(cs)
            if not (ego.is_finite() and s2e.is_finite()):
                log.warning("%s: non-finite pose for %s; %s counts as missing", name, path, ch)
                continue
            cams.append(CameraFrame(
                channel=ch,
                frame_id=frame_id,
                timestamp_us=int(sd["timestamp"]),
                image=image,
                intrinsic=intrinsic,
                sensor_to_ego=s2e,
                ego_to_global=ego,
                scene=name,
                sample_data_token=sd["token"],
                is_key_frame=bool(sd["is_key_frame"]),
                sample_token=sd["sample_token"] if sd["is_key_frame"] else None,
            ))
        if not cams:
            self.skipped.append(SkipRecord(name, cyc.timestamp_us, "no decodable camera image"))
            log.warning("%s: cycle at %d skipped: no decodable camera image", name, cyc.timestamp_us)
            return None
        present = {c.channel for c in cams}
        return FrameSet(
            frame_id=frame_id,
            scene=name,
            timestamp_us=cyc.timestamp_us,
            cameras=tuple(cams),
            missing=tuple(ch for ch in CAMERA_CHANNELS if ch not in present),
            ego_to_global=track_poses[cyc.track_index],
            kinematics=kinematics_in_track(track_ts, track_poses, cyc.track_index),
            sample_token=cyc.sample_token,
            new_scene=new_scene,
            timings=(StageTiming("load", start_ns, time.time_ns()),),
        )

    def _try_decode(self, job: tuple[Path, np.ndarray]) -> tuple[np.ndarray, np.ndarray] | Exception:
        try:
            return self._decode(*job)
        except (OSError, ValueError, SyntaxError) as e:  # simplejpeg (strict) and PIL raise these for corrupt files
            return e

    def _decode(self, path: Path, intrinsic: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The image, at the scale `decode_for` allows, and the intrinsic of that scale."""
        if self._needed_size is None or intrinsic.shape != (3, 3) or not np.all(np.isfinite(intrinsic)):
            return load_image(path), intrinsic  # a bad intrinsic goes on as it is: the input check names it
        needed = self._needed_size
        image = None
        if self._defer:
            data = path.read_bytes()
            if is_jpeg(data):  # other formats decode here, as always
                image, full = encoded_jpeg(data, lambda size: needed(intrinsic, size))
        if image is None:
            image, full = decode_image(path, lambda size: needed(intrinsic, size))
        if tuple(image.shape[:2]) == full:
            return image, intrinsic
        return image, scale_intrinsic(intrinsic, image.shape[1] / full[1], image.shape[0] / full[0])

    def describe(self) -> str:
        mode = "keyframes" if self.keyframes_only else "keyframes+sweeps"
        pace = f"real time x{self.speed:g}" if self.realtime else "as fast as possible"
        split = f", split {self.split}" if self.split else ""
        names = ", ".join(self.scene_names[:5]) + (" ..." if len(self.scene_names) > 5 else "")
        return (f"nuScenes {self.version} at {self.dataroot}{split}: {len(self.scene_records)} scene(s) "
                f"({names}), {mode}, {pace}")
