"""Export simulated drives as a nuScenes-format dataroot that the devkit loads unmodified.

    export_dataset(ExportConfig(out=Path("/tmp/sim"), scenes=10)) -> ExportSummary

writes, under `out`:
    <version>/*.json                  the thirteen tables (export_tables.py)
    maps/<token>.png                  one drivable-area mask per scene (export_map.py)
    samples/CAM_*/<log>__CAM_*__<ts>.jpg   camera keyframes at 2 Hz (every 6th 12 Hz cycle)
    sweeps/CAM_*/<log>__CAM_*__<ts>.jpg    the other camera frames of the 12 Hz cycles
    bevstream/road_geometry/<scene>.json   and bevstream/labels/...png (replay/layout.py)
    bevstream/manifest.json           how the dataset was made
    samples/LIDAR_TOP/<log>__LIDAR_TOP__<ts>.pcd.bin   the simulated lidar's sweep at every keyframe
LIDAR_TOP has a sample_data row, ego pose and point file (replay/sim/lidar.py: 32 beams, 70 m, nuScenes'
float32 x, y, z, intensity, ring layout) at every keyframe, and no 20 Hz sweeps between them; its hits
per object are the annotations' num_lidar_pts.

With `annotate_every_frame` (12 Hz ground truth, for streaming evaluation) the same drive is written
with every 12 Hz camera cycle a keyframe: a sample with its six camera images under samples/, a
LIDAR_TOP sweep, annotations and instance links (so the devkit's box_velocity differentiates over
1/12 s); no sweeps/ folder. Without it the output is byte-identical to an export made before the flag.

Each scene is its own World (seed derived from the dataset seed and the scene index), driven for
`duration_s`; its keyframe annotations are measured at the LIDAR_TOP keyframe timestamps (the
sample timestamps, as in nuScenes), their visibility on the keyframe label images. Scenes
are independent, so they are exported in parallel processes; the tables are merged in scene order,
and the same config gives byte-identical files.
"""
from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from PIL import Image
from pyquaternion import Quaternion

from replay.export.map_mask import drivable_mask_from_ground, write_map_mask, write_mask_png, write_road_geometry
from replay.export.tables import (
    ANNOTATION_RADIUS_M,
    KeyframeTruth,
    SceneInfo,
    SensorFrame,
    map_token,
    scene_tables,
    static_tables,
)
from replay.export.visibility import VisibilityAccumulator, fill_factors
from replay.export.splits import VERSIONS, scene_names
from replay.layout import BEVSTREAM_DIR, label_path, road_geometry_path
from replay.sim.agent_specs import CLASS_SPECS
from replay.sim.exposures import iter_captures
from replay.sim.lidar import lidar_sweep, write_pcd_bin
from replay.sim.render import Renderer
from replay.sim.rig import SensorCalibration, camera_rig, lidar_calibration
from replay.sim.roads import MARK_WHITE, MARK_YELLOW, ROAD
from replay.sim.world import AgentState, World
from schema.messages import CAMERA_CHANNELS

CAMERA_HZ = 12.0
KEYFRAME_EVERY = 6  # 12 Hz camera cycles per 2 Hz keyframe
LIDAR_CHANNEL = "LIDAR_TOP"
TABLE_NAMES = (
    "attribute", "calibrated_sensor", "category", "ego_pose", "instance", "log", "map",
    "sample", "sample_annotation", "sample_data", "scene", "sensor", "visibility",
)
FIRST_START_US = 1_600_000_000_000_000  # 2020-09-13; scene i starts i hours later
SCENE_SPACING_US = 3_600_000_000
VISIBILITY_MARGIN_M = 10.0  # agents this far beyond the annotation radius are still measured


@dataclass(frozen=True)
class ExportConfig:
    """What `bevstream sim` writes; everything that changes the output is here."""

    out: Path
    scenes: int = 10
    seed: int = 0
    version: str = "v1.0-mini"
    split: str = "auto"  # 'auto' | 'train' | 'val' (see replay.export.splits.scene_names)
    width: int = 800
    height: int = 450
    duration_s: float = 20.0  # per scene, as nuScenes' ~20 s scenes
    jpeg_quality: int = 90
    workers: int = 2  # processes; scenes are exported in parallel (output does not depend on it)
    overwrite: bool = False
    annotate_every_frame: bool = False  # every 12 Hz camera cycle a sample (12 Hz ground truth), not every 6th

    def validate(self) -> None:
        if self.version not in VERSIONS:
            raise ValueError(f"--version must be one of {VERSIONS}, got {self.version!r}")
        if self.scenes < 1:
            raise ValueError(f"--scenes must be >= 1, got {self.scenes}")
        if self.width < 16 or self.height < 16:
            raise ValueError(f"image size {self.width}x{self.height} is too small (min 16x16)")
        if not self.duration_s >= 1.0:
            raise ValueError(f"--duration must be at least 1 s (two keyframes), got {self.duration_s}")
        if not 1 <= self.jpeg_quality <= 95:
            raise ValueError(f"jpeg quality must be in [1, 95], got {self.jpeg_quality}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        scene_names(self.version, self.scenes, self.split)  # raises on too many scenes for the split

    @property
    def num_keyframes(self) -> int:
        """2 Hz keyframes of the drive; the drive is camera cycles 0 .. KEYFRAME_EVERY * (num_keyframes - 1)."""
        return int(math.floor(self.duration_s * 2.0 + 1e-9))

    @property
    def keyframe_every(self) -> int:
        """Camera cycles per sample: 1 with annotate_every_frame, else KEYFRAME_EVERY (2 Hz)."""
        return 1 if self.annotate_every_frame else KEYFRAME_EVERY

    @property
    def num_samples(self) -> int:
        """Samples (annotated keyframes) per scene: the 2 Hz keyframes, or every camera cycle of the drive."""
        return KEYFRAME_EVERY * (self.num_keyframes - 1) // self.keyframe_every + 1


@dataclass(frozen=True)
class SceneJob:
    config: ExportConfig
    index: int
    name: str
    split: str


@dataclass(frozen=True)
class ExportSummary:
    dataroot: Path
    version: str
    scenes: tuple[tuple[str, str], ...]  # (name, split)
    samples: int
    camera_images: int
    annotations: int
    seconds: float
    tables: dict = field(repr=False, default_factory=dict)


def scene_seed(seed: int, index: int) -> int:
    """World seed of scene `index` in a dataset of seed `seed` (stable across Python versions)."""
    return int(hashlib.md5(f"bevstream-sim:{seed}:{index}".encode()).hexdigest()[:8], 16)


def scene_start_us(index: int) -> int:
    return FIRST_START_US + index * SCENE_SPACING_US


def _write_jpeg(path: Path, rgb: np.ndarray, quality: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path, format="JPEG", quality=quality)


def _write_label(path: Path, labels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(labels).save(path, format="PNG", compress_level=3)


def _near(agents, ego_xy: np.ndarray, radius: float) -> list:
    return [a for a in agents if np.hypot(*(np.asarray(a.center[:2], dtype=np.float64) - ego_xy)) <= radius]


def export_scene(job: SceneJob) -> dict[str, list[dict]]:
    """Render and write one scene's images, labels, lidar, map and road geometry; return its table rows."""
    cfg = job.config
    root = Path(cfg.out)
    wseed = scene_seed(cfg.seed, job.index)
    start_us = scene_start_us(job.index)
    logfile = f"bevstream-sim-s{cfg.seed}-{job.index:04d}"
    key = f"seed{cfg.seed}/scene{job.index}"
    date = datetime.fromtimestamp(start_us / 1e6, tz=timezone.utc).date().isoformat()

    rig = camera_rig(cfg.width, cfg.height)
    lidar = lidar_calibration()
    calibrations = {ch: rig[ch] for ch in CAMERA_CHANNELS}
    calibrations[LIDAR_CHANNEL] = lidar

    world = World(wseed)
    renderer = Renderer(world, cfg.width, cfg.height)
    fill = _class_fill(world, renderer, rig["CAM_FRONT"])
    visibility = [VisibilityAccumulator(fill) for _ in range(cfg.num_samples)]
    frames = _write_cameras(cfg, root, world, renderer, rig, start_us, logfile, visibility)
    lidar_frames, keyframes = _write_lidar(cfg, root, world, lidar, start_us, logfile, visibility)

    map_filename = f"maps/{map_token(key)}.png"
    info = SceneInfo(
        key=key,
        name=job.name,
        description=f"bevstream simulated drive, world seed {wseed}, {job.split} split",
        logfile=logfile,
        date_captured=date,
        location="bevstream-sim",
        map_filename=map_filename,
    )
    _write_world_map(root / map_filename, world)
    write_road_geometry(road_geometry_path(root, job.name), job.name, world.road_geometry)
    return scene_tables(info, calibrations, frames + lidar_frames, keyframes)


def _write_cameras(cfg: ExportConfig, root: Path, world: World, renderer: Renderer, rig: dict, start_us: int,
                   logfile: str, visibility: list[VisibilityAccumulator]) -> list[SensorFrame]:
    """Render and write every camera image and label image of the drive; measure visibility at the samples."""
    every = cfg.keyframe_every
    last_cycle = KEYFRAME_EVERY * (cfg.num_keyframes - 1)
    frames: list[SensorFrame] = []
    drive_s = (last_cycle + 1.5) / CAMERA_HZ  # whatever the end rule, cycle last_cycle is included
    for cap in iter_captures(world, rig, start_us, drive_s, rate_hz=CAMERA_HZ):
        if cap.cycle > last_cycle:
            break
        cam = rig[cap.channel]
        is_key = cap.cycle % every == 0
        folder = "samples" if is_key else "sweeps"
        filename = f"{folder}/{cap.channel}/{logfile}__{cap.channel}__{cap.timestamp_us}.jpg"
        rgb, labels = renderer.render(cap.state, cam)
        _write_jpeg(root / filename, rgb, cfg.jpeg_quality)
        _write_label(label_path(root, filename), labels)
        frames.append(SensorFrame(cap.channel, cap.timestamp_us, cap.state.ego_pose, is_key, filename, "jpg", cfg.width, cfg.height))
        if is_key:
            ego_xy = np.asarray(cap.state.ego_pose.translation[:2], dtype=np.float64)
            agents = _near(cap.state.agents, ego_xy, ANNOTATION_RADIUS_M + VISIBILITY_MARGIN_M)
            visibility[cap.cycle // every].add_camera(agents, cap.state.ego_pose, cam, labels)
    return frames


def _write_lidar(cfg: ExportConfig, root: Path, world: World, lidar: SensorCalibration, start_us: int, logfile: str,
                 visibility: list[VisibilityAccumulator]) -> tuple[list[SensorFrame], list[KeyframeTruth]]:
    """LIDAR_TOP at every sample (the sample timestamps), each with its sweep, and the samples' ground truth.

    The 20 Hz sweeps between keyframes are not simulated: nothing here trains or evaluates on them."""
    every = cfg.keyframe_every
    frames: list[SensorFrame] = []
    keyframes: list[KeyframeTruth] = []
    (root / "samples" / LIDAR_CHANNEL).mkdir(parents=True, exist_ok=True)
    for k in range(cfg.num_samples):
        ts = start_us + lidar.time_offset_us + int(round(k * 1e6 * every / CAMERA_HZ))
        state = world.state_at((ts - start_us) / 1e6)
        filename = f"samples/{LIDAR_CHANNEL}/{logfile}__{LIDAR_CHANNEL}__{ts}.pcd.bin"
        sweep = lidar_sweep(world, state, lidar)
        write_pcd_bin(root / filename, sweep.points)
        frames.append(SensorFrame(LIDAR_CHANNEL, ts, state.ego_pose, True, filename, "pcd"))
        keyframes.append(KeyframeTruth(ts, state, sweep.counts, visibility[k].fractions()))
    return frames, keyframes


def _class_fill(world: World, renderer: Renderer, camera: SensorCalibration) -> dict:
    """Per-class share of the box hull an unoccluded object covers (export_visibility.fill_factors)."""
    state0 = world.state_at(0.0)
    protos = []
    for name, (category, size, _) in sorted(CLASS_SPECS.items()):
        riders = ("cycle.with_rider", "cycle.without_rider") if name in ("bicycle", "motorcycle") else ("",)
        for attr in riders:
            protos.append(AgentState(f"fill-{name}-{attr}", category, name, np.array(size, dtype=np.float64),
                                     np.zeros(3), Quaternion(), np.zeros(3), attr, (128, 128, 128)))
    counter = iter(range(10**6))

    def render_one(agent):
        # a distinct, impossible time for every synthetic state: the renderer caches per state and time
        state = replace(state0, time_s=-1e6 - next(counter), agents=(agent,))
        return renderer.render(state, camera)[1]

    return fill_factors(render_one, protos, state0.ego_pose, camera)


def _write_world_map(path: Path, world: World) -> None:
    """Drivable area from the world's ground raster (road + markings), else from its polylines."""
    ground = getattr(world, "ground", None)
    if ground is None:
        write_map_mask(path, world.road_geometry)
        return
    mask = drivable_mask_from_ground(ground.material, ground.origin, ground.resolution, (ROAD, MARK_WHITE, MARK_YELLOW))
    write_mask_png(path, mask)


def _prepare_out(cfg: ExportConfig) -> Path:
    root = Path(cfg.out)
    if root.exists() and any(root.iterdir()):
        if not cfg.overwrite:
            raise FileExistsError(f"{root} is not empty; choose another --out or pass --overwrite")
        for sub in ("samples", "sweeps", "maps", BEVSTREAM_DIR, cfg.version):
            if (root / sub).exists():
                shutil.rmtree(root / sub)
    root.mkdir(parents=True, exist_ok=True)
    return root


def _dump(path: Path, rows) -> None:
    path.write_text(json.dumps(rows, indent=0, sort_keys=False) + "\n")


def _manifest_config(cfg: ExportConfig) -> dict:
    """The config as the manifest records it; annotate_every_frame only when set, so that a default export
    stays byte-identical to one made before the flag existed."""
    skip = ("out", "workers", "overwrite") + (() if cfg.annotate_every_frame else ("annotate_every_frame",))
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items() if k not in skip}


def export_dataset(cfg: ExportConfig, progress: bool = False) -> ExportSummary:
    """Write the whole dataroot; deterministic in `cfg` (except `workers`, which only sets speed)."""
    cfg.validate()
    t0 = time.perf_counter()
    root = _prepare_out(cfg)
    names = scene_names(cfg.version, cfg.scenes, cfg.split)
    jobs = [SceneJob(cfg, i, name, split) for i, (name, split) in enumerate(names)]
    workers = min(cfg.workers, len(jobs))
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            per_scene = []
            for i, rows in enumerate(pool.map(export_scene, jobs)):
                per_scene.append(rows)
                if progress:
                    print(f"  scene {i + 1}/{len(jobs)} {jobs[i].name} done", flush=True)
    else:
        per_scene = []
        for i, job in enumerate(jobs):
            per_scene.append(export_scene(job))
            if progress:
                print(f"  scene {i + 1}/{len(jobs)} {job.name} done", flush=True)

    tables = static_tables([(ch, "camera") for ch in CAMERA_CHANNELS] + [(LIDAR_CHANNEL, "lidar")])
    for rows in per_scene:
        for name, table in rows.items():
            tables.setdefault(name, []).extend(table)
    missing = set(TABLE_NAMES) - set(tables)
    if missing:
        raise RuntimeError(f"exporter produced no {sorted(missing)} table")
    table_dir = root / cfg.version
    table_dir.mkdir(parents=True, exist_ok=True)
    for name in TABLE_NAMES:
        _dump(table_dir / f"{name}.json", tables[name])
    manifest = {
        "generator": "bevstream sim",
        "config": _manifest_config(cfg),
        "scenes": [{"name": j.name, "split": j.split, "world_seed": scene_seed(cfg.seed, j.index)} for j in jobs],
        "lidar_files": "samples/LIDAR_TOP/*.pcd.bin at keyframes (simulated 32-beam sweep, intensity 0); no sweeps between",
        "layout": "see replay/layout.py: bevstream/road_geometry/<scene>.json, bevstream/labels/<image path>.png",
    }
    if cfg.annotate_every_frame:
        manifest["samples"] = "every 12 Hz camera cycle is a sample (12 Hz ground truth); no sweeps/"
    (root / BEVSTREAM_DIR).mkdir(parents=True, exist_ok=True)
    _dump(root / BEVSTREAM_DIR / "manifest.json", manifest)
    return ExportSummary(
        dataroot=root,
        version=cfg.version,
        scenes=tuple(names),
        samples=len(tables["sample"]),
        camera_images=sum(1 for r in tables["sample_data"] if r["fileformat"] == "jpg"),
        annotations=len(tables["sample_annotation"]),
        seconds=time.perf_counter() - t0,
        tables=tables,
    )
