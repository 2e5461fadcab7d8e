"""runtime.yaml as typed, strictly validated objects: read once at start, passed on explicitly.

Every section forbids unknown keys, so a typo stops the run instead of silently using a default.
Any problem (unknown key, wrong type or value, a configured checkpoint or dataroot that does not
exist) raises one `ConfigError` whose message names every offending key and its problem; the CLI
prints it and exits non-zero. Nothing else in the project reads runtime.yaml.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO_ROOT / "runtime.yaml"
# Where issue 5 ships trained weights; used when model.checkpoint is null and the file exists.
SHIPPED_WEIGHTS = REPO_ROOT / "perception" / "weights" / "bevstream.pt"


class ConfigError(ValueError):
    """runtime.yaml (or a CLI override) is invalid; the message names the key(s) and the problem."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class RayConfig(_Strict):
    address: str | None = None  # None: private local Ray; "auto" or "host:port": an existing cluster
    num_cpus: int = Field(2, ge=1)  # CPUs of the private local Ray (ignored when joining a cluster)
    object_store_mb: int = Field(512, ge=64)  # object store of the private local Ray
    namespace: str = "bevstream"


class StageConfig(_Strict):
    num_cpus: float = Field(1.0, ge=0)  # Ray CPUs reserved by the actor
    torch_threads: int = Field(1, ge=0)  # torch.set_num_threads inside the actor; 0 = auto (supervisor.torch_threads)
    resources: dict[str, float] = Field(default_factory=dict)  # custom Ray resources, for placement
    max_restarts: int = Field(3, ge=0)  # Ray restarts the actor this many times after it dies


class StagesConfig(_Strict):
    ingest: StageConfig = StageConfig(num_cpus=0, max_restarts=0)
    backbone: StageConfig = StageConfig(torch_threads=0)  # auto: per stream (supervisor.torch_threads)
    bev: StageConfig = StageConfig(torch_threads=0)
    sink: StageConfig = StageConfig(num_cpus=0, max_restarts=0)


class PipelineConfig(_Strict):
    max_in_flight: int = Field(2, ge=1)  # live: ticks submitted to the actors and not finished (runtime.yaml says why 2)
    replay_max_in_flight: int = Field(1, ge=1)  # the same cap for replays (runtime.yaml says why 1)
    live_queue: int = Field(1, ge=0)  # live: frame sets waiting for a slot before the oldest is dropped
    min_cameras: int = Field(1, ge=1, le=6)  # fewer cameras present -> drop record 'late_camera'
    checkpoint_every: int = Field(24, ge=0)  # ticks between temporal-state checkpoints; 0 = never
    seg_stride: int = Field(1, ge=1)  # keep every n-th pixel of the model's seg maps in results
    live_ingest: Literal["actor", "thread"] = "actor"  # where a live source runs and is synchronised
    # Live sources through the ingest actor: "camera" = each camera goes to the backbone as it arrives
    # (the BEV step starts once the set's last camera is encoded); "set" = the whole set at once.
    live_encode: Literal["camera", "set"] = "set"
    # Replayed JPEGs decode at the coarsest DCT scale that still gives the rectifier its full input
    # (replay/nuscenes/source.py decode_for); False: full-size decode, pixel-identical to a plain loop.
    scaled_decode: bool = True
    # Where a replay's JPEGs decode (with scaled_decode): "backbone" = in the backbone stage's process (the driver reads
    # the files; the object store carries the compressed bytes); "driver" = in the driver's reader threads.
    replay_decode: Literal["backbone", "driver"] = "backbone"
    read_ahead: int = Field(0, ge=0)  # replay: frame sets loaded ahead of the pipeline's asks (0: on a free slot)
    ingest_threads: int = Field(2, ge=1)  # replay: threads that decode (where replay_decode says) and shrink a set's cameras

    def cap(self, live: bool) -> int:
        """Ticks in flight for a live stream or a replay."""
        return self.max_in_flight if live else self.replay_max_in_flight


class SyncConfig(_Strict):
    tolerance_ms: float = Field(20.0, gt=0)  # a camera belongs to a cycle within this of its reference time
    max_wait_ms: float = Field(12.0, gt=0)  # a cycle is emitted (degraded) when a camera is this late past its exposure


class NuScenesSourceConfig(_Strict):
    dataroot: Path | None = None  # nuScenes-format dataset root; required by `replay`
    version: str = "v1.0-mini"
    split: str | None = None  # a devkit split name (mini_val, val, ...); None = all scenes
    scenes: list[str] | None = None  # scene names; None = all (of the split)
    keyframes_only: bool = False  # 2 Hz keyframes only instead of every 12 Hz camera sweep
    realtime: bool = False  # pace the replay by the log's timestamps
    speed: float = Field(1.0, gt=0)  # realtime pacing factor
    skip_late: bool = True  # realtime: pass over cycles already stale when the runtime takes the next set (drop records)

    @field_validator("dataroot")
    @classmethod
    def _dataroot_exists(cls, v: Path | None) -> Path | None:
        if v is not None and not Path(v).is_dir():
            raise ValueError(f"directory not found: {v}")
        return v


class LiveSourceConfig(_Strict):
    seed: int = 0
    width: int = Field(352, ge=16)  # simulated camera image size (pixels)
    height: int = Field(198, ge=16)
    rate_hz: float = Field(12.0, gt=0)  # camera cycle rate
    duration_s: float = Field(10.0, gt=0)
    jitter_ms: float = Field(2.0, ge=0)  # timestamp/arrival jitter per frame
    late_prob: float = Field(0.01, ge=0, le=1)  # probability a frame arrives late
    drop_prob: float = Field(0.01, ge=0, le=1)  # probability a frame never arrives


class SourceConfig(_Strict):
    nuscenes: NuScenesSourceConfig = NuScenesSourceConfig()
    live: LiveSourceConfig = LiveSourceConfig()


class OutputConfig(_Strict):
    out_dir: Path = Path("runs/latest")  # results_nusc.json, ticks.jsonl, summary.json go here
    progress: bool = True  # tqdm progress bar
    submission_max_boxes: int = Field(500, ge=1, le=500)  # nuScenes allows at most 500 boxes per sample
    save_seg: bool = True  # each tick's per-camera seg labels as RUN/seg/FRAME.png (for viz --video; ~3 KB a tick)


# The stages a tick's StageTimings name (runtime/feeders.py, ingest.py, admission.py, pipeline.py, stages.py,
# replay/sync.py, replay/nuscenes/source.py): the keys `profile.budgets_ms` accepts.
TIMED_STAGES = ("exposures", "sync", "load", "put", "ingest", "submit", "backbone_camera", "decode", "backbone", "bev", "deliver")
DEFAULT_BUDGETS_MS = {"ingest": 5.0, "submit": 2.0, "backbone": 35.0, "bev": 45.0, "deliver": 5.0}


class ProfileConfig(_Strict):
    ticks: int = Field(48, ge=1)  # ticks to run (warm-up ticks excluded)
    warmup: int = Field(4, ge=0)
    deadline_ms: float = Field(83.3, gt=0)  # a tick slower than this end to end is a deadline miss
    budgets_ms: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_BUDGETS_MS))  # per stage
    trace: Path = Path("runs/profile/trace.json")  # Chrome/Perfetto trace JSON
    plots: bool = True  # PNGs of the profile beside profile.json

    @field_validator("budgets_ms")
    @classmethod
    def _known_stages(cls, v: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(v) - set(TIMED_STAGES))
        if unknown:
            raise ValueError(f"unknown stage(s) {unknown}; the stages are {list(TIMED_STAGES)} "
                             "(the end-to-end budget is profile.deadline_ms)")
        bad = {k: x for k, x in v.items() if not 0 < x <= 60_000}
        if bad:
            raise ValueError(f"budgets must be > 0 and <= 60000 ms, got {bad}")
        return v


class ModelSection(BaseModel):
    """`model:` - `factory` and `checkpoint` here; every other key goes to perception/config.py, which validates it."""

    model_config = ConfigDict(extra="allow", frozen=True)
    # None: the shipped network; "package.module:callable" or a short name ("oracle"): any implementation of
    # runtime/model_protocol.py, resolved and checked at start by runtime/model_factory.py
    factory: str | None = None
    checkpoint: Path | None = None  # None: shipped weights if present, else random weights (warning)

    @field_validator("checkpoint")
    @classmethod
    def _checkpoint_exists(cls, v: Path | None) -> Path | None:
        if v is not None and not Path(v).is_file():
            raise ValueError(f"checkpoint file not found: {v}")
        return v

    @property
    def options(self) -> dict[str, Any]:
        """The model keys other than `factory` and `checkpoint`, for perception/config.py."""
        return dict(self.model_extra or {})

    def resolved_checkpoint(self) -> Path | None:
        """The weights to load: the configured file, else the shipped one if present, else None."""
        if self.checkpoint is not None:
            return Path(self.checkpoint)
        return SHIPPED_WEIGHTS if SHIPPED_WEIGHTS.is_file() else None


class RuntimeConfig(_Strict):
    ray: RayConfig = RayConfig()
    stages: StagesConfig = StagesConfig()
    pipeline: PipelineConfig = PipelineConfig()
    sync: SyncConfig = SyncConfig()
    source: SourceConfig = SourceConfig()
    output: OutputConfig = OutputConfig()
    profile: ProfileConfig = ProfileConfig()
    model: ModelSection = ModelSection()

    def require_dataroot(self) -> Path:
        if self.source.nuscenes.dataroot is None:
            raise ConfigError("runtime.yaml: source.nuscenes.dataroot: required for replay (set it or pass --dataroot)")
        return Path(self.source.nuscenes.dataroot)


def _format_errors(exc: ValidationError, origin: str) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif "input" in err and not isinstance(err["input"], (dict, list)):
            msg = f"{msg} (got {err['input']!r})"
        lines.append(f"{key}: {msg}")
    if len(lines) == 1:
        return f"{origin}: {lines[0]}"
    return f"{origin}: {len(lines)} problems:\n  " + "\n  ".join(lines)


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    node = tree
    parts = dotted.split(".")
    for p in parts[:-1]:
        child = node.get(p)
        if not isinstance(child, dict):
            child = {}
            node[p] = child
        node = child
    node[parts[-1]] = value


def _resolve_paths(raw: dict, base: Path) -> None:
    """Relative paths in the file are relative to the file's directory (so `bevstream` works from anywhere)."""
    for dotted in ("source.nuscenes.dataroot", "model.checkpoint", "output.out_dir", "profile.trace"):
        node: Any = raw
        parts = dotted.split(".")
        for p in parts[:-1]:
            node = node.get(p) if isinstance(node, dict) else None
        if isinstance(node, dict) and isinstance(node.get(parts[-1]), str):
            p = Path(node[parts[-1]]).expanduser()
            node[parts[-1]] = str(p if p.is_absolute() else base / p)


def validate_model_options(cfg: RuntimeConfig) -> None:
    """Check the model keys with perception/config.py (imports torch); raise ConfigError naming the key."""
    try:
        from perception.config import model_config_from_dict
    except ImportError:  # perception/config.py not there yet: nothing more to check
        return
    try:
        model_config_from_dict(cfg.model.options)
    except (TypeError, ValueError, KeyError) as exc:
        raise ConfigError(f"runtime.yaml: {exc}") from None


def config_from_dict(raw: dict | None, origin: str = "runtime.yaml", overrides: dict[str, Any] | None = None) -> RuntimeConfig:
    """Validate a raw dict (as read from YAML) plus dotted-key overrides (`{"pipeline.max_in_flight": 3}`)."""
    raw = copy.deepcopy(raw or {})
    if not isinstance(raw, dict):
        raise ConfigError(f"{origin}: the top level must be a mapping of sections, got {type(raw).__name__}")
    for key, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(raw, key, value)
    try:
        return RuntimeConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, origin)) from None


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> RuntimeConfig:
    """Read and validate runtime.yaml; CLI overrides are dotted keys with already-absolute paths."""
    path = Path(path) if path is not None else DEFAULT_CONFIG
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if isinstance(raw, dict):
        _resolve_paths(raw, path.resolve().parent)
    return config_from_dict(raw, origin=str(path), overrides=overrides)
