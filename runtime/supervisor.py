"""Starting, placing and stopping the runtime's actors: one place for their lifecycle.

Local by default (a private `ray.init` with explicit CPUs and no dashboard); with `ray.address`
set it joins an existing cluster, and each stage's `resources` in runtime.yaml decide the node it
lands on. Actors get `max_restarts` from the config and `max_task_retries=0`: a tick running when
its actor dies is not silently re-run but becomes a drop record, and the restarted BEV actor
reloads the last temporal-state checkpoint from the StateStore actor.
"""
from __future__ import annotations

import logging
import os
import uuid
from typing import Any, Callable

import ray

from runtime.actors import BackboneActor, BevActor, PerceptionActor, SinkActor, StateStore
from runtime.ingest import IngestActor
from runtime.config import RuntimeConfig, StageConfig

log = logging.getLogger(__name__)

# The pipeline's stages, declared flat: name -> actor class when the stages are placed apart. Stages that
# share their placement run as one PerceptionActor (fused, below). Lifecycle code below is generic.
STAGES: dict[str, type] = {"backbone": BackboneActor, "bev": BevActor}


def stages_fused(cfg: RuntimeConfig) -> bool:
    """Backbone and BEV in one process: whenever their placement is the same (same custom resources, so
    Ray may put them on the same node). Different resources pin them to different nodes: two actors."""
    return dict(cfg.stages.backbone.resources) == dict(cfg.stages.bev.resources)


def fit_to_cpus(cfg: RuntimeConfig, total_cpus: float) -> RuntimeConfig:
    """`cfg` with the backbone and BEV reservations scaled down, in proportion, to the CPUs Ray has in all
    (`--num-cpus 1` as a compute budget): an actor that reserves more than exist would wait forever to be
    placed. Unchanged when they fit."""
    st = cfg.stages
    wanted = st.backbone.num_cpus + st.bev.num_cpus
    if wanted <= total_cpus or wanted == 0:
        return cfg
    scale = total_cpus / wanted
    log.warning("stages reserve %g CPUs (backbone %g + bev %g) but Ray has %g: reserving %g of them", wanted,
                st.backbone.num_cpus, st.bev.num_cpus, total_cpus, total_cpus)
    stages = st.model_copy(update={name: getattr(st, name).model_copy(update={"num_cpus": getattr(st, name).num_cpus * scale})
                                   for name in ("backbone", "bev")})
    return cfg.model_copy(update={"stages": stages})


def ensure_ray(cfg: RuntimeConfig) -> bool:
    """Connect to Ray as configured; returns True if this call started it (and should shut it down)."""
    if ray.is_initialized():
        return False
    common = dict(namespace=cfg.ray.namespace, log_to_driver=False, configure_logging=False)
    if cfg.ray.address:
        ray.init(address=cfg.ray.address, **common)
    else:
        ray.init(num_cpus=cfg.ray.num_cpus, include_dashboard=False,
                 object_store_memory=cfg.ray.object_store_mb * 1024 * 1024, **common)
    return True


def torch_threads(stage: StageConfig, cfg: RuntimeConfig, live: bool = True) -> int:
    """Intra-op threads of a stage actor for a live stream or a replay. Configured (>= 1), or 0 = auto:
    with one tick in flight (pipeline.max_in_flight / replay_max_in_flight) the stages never run at
    the same time, so each may use every CPU of the local Ray (ray.num_cpus); otherwise they overlap,
    and each gets its reserved num_cpus (at least 1)."""
    if stage.torch_threads > 0:
        return stage.torch_threads
    if cfg.pipeline.cap(live) == 1:
        return max(1, int(cfg.ray.num_cpus or os.cpu_count() or 1))
    return max(1, int(round(stage.num_cpus)))


def _options(stage: StageConfig, threads: int = 1) -> dict[str, Any]:
    # No task events: Ray's GCS keeps ~3.4 KB per actor call for its dashboard and state API (the 10 000-tick soak
    # grew gcs_server 59 -> 113 MB; bench/soak_gcs.py: 0.1 KB a call without); the runtime keeps its own timings
    opts: dict[str, Any] = dict(num_cpus=stage.num_cpus, max_restarts=stage.max_restarts, max_task_retries=0,
                                enable_task_events=False)
    if stage.resources:
        opts["resources"] = dict(stage.resources)
    if threads > 1 or stage.torch_threads == 0:  # auto may switch to several threads per stream
        # OpenMP worker threads sleep instead of spinning between parallel regions: on a busy machine
        # (another stage, or other processes, on the same cores) spinning threads burnt ~5x the CPU
        # of a tick (the offline loop with 2 threads, 2 loaded cores: 1000 vs 190 ms CPU per tick).
        opts["runtime_env"] = {"env_vars": {"OMP_WAIT_POLICY": "PASSIVE"}}
    return opts


class Supervisor:
    """Owns the actors of one Runtime: start (and wait until placed), placement, stop."""

    def __init__(self, cfg: RuntimeConfig, model_factory: Callable[[], Any]):
        self.cfg = cfg
        self.model_factory = model_factory
        self.owns_ray = False
        self.store = None
        self.backbone = None
        self.bev = None
        self.sink = None
        self.ingest = None
        self.prescaler = None  # images shrunk as the model's rectifier would, before ray.put (prescale.py)

    def start(self) -> "Supervisor":
        self.owns_ray = ensure_ray(self.cfg)
        self.cfg = fit_to_cpus(self.cfg, ray.cluster_resources().get("CPU", 0.0))
        st, pc = self.cfg.stages, self.cfg.pipeline
        # The checkpoint store lives with the driver's node by default; it must outlive the BEV actor. The
        # stage actors get its name, not its handle (constructor arguments stay small values: restartable).
        store_name = f"bevstream-state-{uuid.uuid4().hex[:12]}"
        self.store = ray.remote(StateStore).options(num_cpus=0, name=store_name, enable_task_events=False).remote()
        nb, nv = torch_threads(st.backbone, self.cfg), torch_threads(st.bev, self.cfg)
        self.threads = {"backbone": nb, "bev": nv}
        per_camera = pc.live_encode == "camera"
        if stages_fused(self.cfg):
            opts = _options(st.bev, max(nb, nv))
            opts.update(num_cpus=st.backbone.num_cpus + st.bev.num_cpus, max_restarts=min(st.backbone.max_restarts, st.bev.max_restarts))
            self.backbone = self.bev = ray.remote(PerceptionActor).options(**opts).remote(
                self.model_factory, dict(self.threads), pc.seg_stride, store_name, pc.checkpoint_every, pc.ingest_threads)
            warm = [self.bev.warmup.remote(per_camera)]
        else:
            self.backbone = ray.remote(BackboneActor).options(**_options(st.backbone, nb)).remote(
                self.model_factory, nb, pc.seg_stride, store_name, pc.ingest_threads)
            self.bev = ray.remote(BevActor).options(**_options(st.bev, nv)).remote(
                self.model_factory, nv, store_name, pc.checkpoint_every)
            # Once, before the stream: the actors are up and have run one synthetic tick (warm-up); with
            # per-camera encoding of live streams also every batch size (each plans its own kernels).
            warm = [self.bev.warmup.remote(self.backbone.warmup.remote())]
            if per_camera:
                warm.append(self.backbone.warmup_cameras.remote())
        ray.get(warm)
        rect = ray.get(self.backbone.rectify_config.remote())
        if rect is not None:
            from runtime.prescale import Prescaler

            self.prescaler = Prescaler(rect, workers=pc.ingest_threads)
        return self

    @property
    def fused(self) -> bool:
        return self.backbone is not None and self.backbone is self.bev

    def start_sink(self, out_dir: str, expected_samples: list[str] | None) -> Any:
        opts = _options(self.cfg.stages.sink)
        self.sink = ray.remote(SinkActor).options(**opts).remote(
            str(out_dir), expected_samples, self.cfg.output.submission_max_boxes, self.cfg.output.save_seg)
        return self.sink

    def start_ingest(self, source: Any) -> Any:
        """The ingest actor of a live source (the source object is shipped to it; it runs there)."""
        per_camera = self.cfg.pipeline.live_encode == "camera" and hasattr(source, "camera_frames")
        # Threaded (max_concurrency): the driver's reports (finished, block) must not queue behind `next`.
        pc = self.cfg.pipeline
        self.ingest = ray.remote(IngestActor).options(max_concurrency=4, **_options(self.cfg.stages.ingest)).remote(
            source, self.cfg.sync, pc.min_cameras, self.backbone if per_camera else None, pc.max_in_flight, pc.live_queue,
            self.bev)
        return self.ingest

    def placement(self) -> dict[str, str]:
        """Stage -> Ray node id it runs on."""
        actors = {"backbone": self.backbone, "bev": self.bev}
        for name in ("ingest", "sink"):
            if getattr(self, name) is not None:
                actors[name] = getattr(self, name)
        ids = ray.get([a.node_id.remote() for a in actors.values()])
        return dict(zip(actors, ids))

    def threads_for(self, live: bool) -> dict[str, int]:
        """Give the stage actors with torch_threads 0 (auto) the thread count for a live stream or a
        replay (their caps on ticks in flight differ). -> threads per stage."""
        for name, actor in (("backbone", self.backbone), ("bev", self.bev)):
            n = torch_threads(getattr(self.cfg.stages, name), self.cfg, live)
            if n != self.threads.get(name):  # the store keeps it for an actor Ray restarts mid-stream
                call = actor.set_threads.remote(n, name) if self.fused else actor.set_threads.remote(n)
                ray.get([call, self.store.set_threads.remote(name, n)])
                self.threads[name] = n
        return dict(self.threads)

    def restarts(self) -> dict[str, int]:
        return ray.get(self.store.restarts.remote()) if self.store is not None else {}

    def stop(self) -> None:
        if self.fused:
            self.backbone = None  # one actor: killed once, as `bev`
        for name in ("ingest", "sink", "bev", "backbone", "store"):
            actor = getattr(self, name)
            if actor is not None:
                try:
                    ray.kill(actor, no_restart=True)
                except Exception:  # noqa: BLE001 - already gone
                    pass
                setattr(self, name, None)
        if self.owns_ray and ray.is_initialized():
            ray.shutdown()
            self.owns_ray = False
