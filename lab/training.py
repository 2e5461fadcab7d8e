"""The training loop: clip batches through `model.forward_clip`, AdamW, warm-up + cosine schedule.

Pure torch, no Ray. What it needs from the outside:
- a model with `forward_clip(clip_inputs, clip_targets) -> dict[str, Tensor]` of losses (the
  temporal state is carried through the clip inside it); the total is `losses['total']` if present,
  else the sum of all entries;
- a map-style dataset indexed by `StepSampler` items `(clip index, epoch, item seed)`, and a
  collate function turning a list of its samples into `(clip_inputs, clip_targets)`.

Streaming training (`TrainConfig.stream`): row b of every batch continues stream b's drive
(`StreamSampler` items `StreamItem(clip, seed, continues)`, from the dataset's `index.walk_clips`), and
the temporal state at the end of one step's clips, detached, starts the next step's:
`model.forward_clip(inputs, targets, state, return_state=True) -> (losses, state)`. Frames then train
with the full queues and the long-lived hidden raster they have at inference, not the few frames of
one clip (the idea of StreamPETR's and SOLOFusion's streaming training). A new drive in a row starts
with its first frame marked `reset`, which clears that row of the state.

Reproducibility: the batch of step s is a pure function of (seed, s) (`StepSampler`), workers get
explicit per-item seeds, the DataLoader draws its worker seeds from a private generator, and the
checkpoint holds model, optimizer, scheduler, torch RNG state, step (and the carried temporal state
when streaming). So a run resumed from a checkpoint at step k takes exactly the step k+1 an
uninterrupted run would have taken.

Outputs in `out_dir`: `step_0001000.pt` every `checkpoint_every` steps and at the end, `last.pt`
(the newest), and `curve.jsonl` (one line per step: step, lr, losses, grad norm, wall time).
"""
from __future__ import annotations

import dataclasses
import fnmatch
import json
import math
import random
import time
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from lab.samplers import StepSampler, StreamSampler
from perception.checkpoint import load_checkpoint, load_weights, save_checkpoint


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 1000  # optimizer steps in total (a resumed run continues up to this)
    batch_size: int = 1  # clips per step
    lr: float = 3e-4  # peak learning rate
    weight_decay: float = 1e-2  # AdamW decoupled weight decay (not applied to biases and norm weights)
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 100  # linear warm-up from lr * warmup_start to lr
    warmup_start: float = 0.1
    schedule: str = "cosine"  # "cosine": cosine decay to lr * min_lr_ratio after warm-up; "constant"
    min_lr_ratio: float = 0.05
    grad_clip: float = 10.0  # max global gradient norm; 0 disables clipping
    # (fnmatch pattern of parameter names, factor): those parameters learn at lr x factor (the first pattern
    # that matches wins), e.g. a zero-initialised branch grown in a fine-tune, which starts far from its scale.
    lr_scales: tuple[tuple[str, float], ...] = ()
    checkpoint_every: int = 500  # steps between checkpoints (one is always written at the end)
    keep_checkpoints: int = 3  # older step_*.pt files beyond this many are deleted
    num_workers: int = 1  # DataLoader worker processes (this machine has 2 cores)
    prefetch_factor: int = 2
    seed: int = 0
    stream: bool = False  # streaming training: carry the temporal state across steps along whole drives (StreamSampler)
    progress: bool = True  # tqdm progress bar

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "checkpoint_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"TrainConfig.lr must be positive, got {self.lr}")
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(f"TrainConfig.schedule must be 'cosine' or 'constant', got {self.schedule!r}")
        if self.num_workers < 0 or self.warmup_steps < 0 or self.grad_clip < 0:
            raise ValueError("TrainConfig: num_workers, warmup_steps and grad_clip must be >= 0")
        for pattern, factor in self.lr_scales:
            if not factor > 0:
                raise ValueError(f"TrainConfig.lr_scales: the factor of {pattern!r} must be positive, got {factor}")

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown training option(s) {sorted(unknown)}; known: {sorted(known)}")
        d = dict(d)
        if "betas" in d:
            d["betas"] = tuple(d["betas"])
        if "lr_scales" in d:
            d["lr_scales"] = tuple((str(p), float(f)) for p, f in d["lr_scales"])
        return cls(**d)


# ---- optimisation ---------------------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ---- optimiser and schedule -----------------------------------------------------------------------------


def param_lr_scale(name: str, cfg: TrainConfig) -> float:
    """The learning-rate factor of parameter `name`: that of the first matching pattern of cfg.lr_scales, else 1."""
    return next((factor for pattern, factor in cfg.lr_scales if fnmatch.fnmatchcase(name, pattern)), 1.0)


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW; biases and 1-D (norm) weights get no weight decay; cfg.lr_scales set the rate of some parameters.
    Groups at factor 1 come first, so param_groups[0]["lr"] is the run's learning rate."""
    groups: dict[tuple[float, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            groups.setdefault((param_lr_scale(name, cfg), p.ndim > 1), []).append(p)
    order = sorted(groups, key=lambda k: (k[0] != 1.0, k[0], not k[1]))
    return torch.optim.AdamW([{"params": groups[k], "lr": cfg.lr * k[0], "weight_decay": cfg.weight_decay if k[1] else 0.0} for k in order],
                             lr=cfg.lr, betas=cfg.betas)


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Multiplier of the peak lr at optimizer step `step` (0-based): linear warm-up, then cosine or flat."""
    if step < cfg.warmup_steps:
        return cfg.warmup_start + (1.0 - cfg.warmup_start) * step / cfg.warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    span = max(1, cfg.steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg))


def total_loss(losses: dict[str, Tensor]) -> Tensor:
    """The scalar to back-propagate: losses['total'] if the model gives one, else the sum of all terms."""
    if not losses:
        raise ValueError("forward_clip returned no losses")
    if "total" in losses:
        return losses["total"]
    return sum(losses.values())  # type: ignore[return-value]


def _prune(out_dir: Path, keep: int) -> None:
    old = sorted(out_dir.glob("step_*.pt"))
    for p in old[:-keep]:
        p.unlink(missing_ok=True)


# ---- the loop -------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    steps_run: int  # optimizer steps taken in this call
    final_step: int
    last_losses: dict[str, float]
    wall_s: float
    checkpoint: Path | None
    history: list[dict] = field(default_factory=list)  # the curve rows written in this call


def _to_device(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, Tensor):
        return obj.to(device, non_blocking=True)
    if device.type == "cpu":
        return obj  # everything the collate function builds is already on the CPU
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.replace(obj, **{f.name: _to_device(getattr(obj, f.name), device) for f in dataclasses.fields(obj) if f.init})
    if hasattr(obj, "to") and callable(obj.to) and not isinstance(obj, nn.Module):
        try:
            return obj.to(device)
        except TypeError:
            pass
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_device(o, device) for o in obj)
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    return obj


def _detached(obj: Any) -> Any:
    """A carried temporal state cut from the graph of the step that made it (truncated back-propagation)."""
    if obj is None:
        return None
    if hasattr(obj, "detach"):  # a tensor, or a TemporalState
        return obj.detach()
    if isinstance(obj, (list, tuple)):
        return type(obj)(_detached(o) for o in obj)
    if isinstance(obj, dict):
        return {k: _detached(v) for k, v in obj.items()}
    raise TypeError(f"cannot detach a carried state of type {type(obj).__name__}")


def _worker_init(worker_id: int) -> None:
    torch.set_num_threads(1)  # 2 cores: the main process does the compute


def train(
    model: nn.Module,
    dataset: torch.utils.data.Dataset,
    collate_fn: Callable[[list], tuple[Any, Any]],
    cfg: TrainConfig,
    out_dir: str | Path,
    resume: bool = False,
    model_config: dict | None = None,
    device: str | torch.device = "cpu",
    extra_config: dict | None = None,
    stop_at: int | None = None,
    init_from: str | Path | None = None,
    complete_model_config: Callable[[dict], dict] | None = None,
) -> TrainResult:
    """Train `model` up to cfg.steps optimizer steps (from out_dir/last.pt if `resume`), writing to out_dir.

    `stop_at` ends this call early after that step (with a checkpoint) without changing the schedule,
    so a long run can be done in pieces: `stop_at=k`, then `resume=True`.
    `init_from` (a checkpoint or exported weights file) starts a new run from those weights, with a fresh
    optimizer and schedule: fine-tuning, e.g. at another input size or on other data. Ignored on resume.
    `complete_model_config` fills a saved model config's missing keys with their defaults before resume
    compares it with `model_config`: a checkpoint from before a key was added is the model it was.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device(device)
    config = {"train": asdict(cfg), "model": model_config, **(extra_config or {})}
    seed_everything(cfg.seed)
    model.to(device)
    optimizer = make_optimizer(model, cfg)
    scheduler = make_scheduler(optimizer, cfg)
    curve_path = out_dir / "curve.jsonl"
    if resume:
        start_step, carried = _resume(out_dir / "last.pt", model, optimizer, scheduler, cfg, model_config, extra_config,
                                      complete_model_config)
        _truncate_curve(curve_path, start_step)
    else:
        start_step, carried = 0, None  # carried, streaming: the temporal state the next step starts from
        if init_from is not None:
            _init_from(model, init_from)
        curve_path.unlink(missing_ok=True)
    if start_step >= cfg.steps:
        return TrainResult(0, start_step, {}, 0.0, out_dir / "last.pt" if resume else None)

    end_step = cfg.steps if stop_at is None else max(start_step, min(cfg.steps, int(stop_at)))
    loader = _loader(dataset, collate_fn, cfg, start_step, end_step)
    bar = tqdm(total=cfg.steps, initial=start_step, desc="train", unit="step", dynamic_ncols=True) if cfg.progress else None
    model.train()
    t0 = time.perf_counter()
    step = start_step
    history: list[dict] = []
    last: dict[str, float] = {}
    ckpt: Path | None = None
    with open(curve_path, "a") as curve:
        for batch in loader:
            last, grad_norm, lr, carried = _step(model, optimizer, scheduler, _to_device(batch, device), carried, cfg, step)
            step += 1
            row = {"step": step, "lr": lr, **last, "grad_norm": grad_norm, "wall_s": round(time.perf_counter() - t0, 3)}
            history.append(row)
            curve.write(json.dumps(row) + "\n")
            curve.flush()
            if bar is not None:
                bar.update(1)
                bar.set_postfix({k: f"{v:.3f}" for k, v in list(last.items())[:6]}, refresh=False)
            if step % cfg.checkpoint_every == 0 or step == end_step:
                ckpt = save_checkpoint(out_dir / f"step_{step:07d}.pt", model, optimizer, scheduler, step, config, carried)
                save_checkpoint(out_dir / "last.pt", model, optimizer, scheduler, step, config, carried)
                _prune(out_dir, cfg.keep_checkpoints)
    if bar is not None:
        bar.close()
    return TrainResult(step - start_step, step, last, time.perf_counter() - t0, ckpt, history)


def _resume(ckpt_path: Path, model: nn.Module, optimizer, scheduler, cfg: TrainConfig, model_config: dict | None,
            extra_config: dict | None, complete_model_config: Callable[[dict], dict] | None) -> tuple[int, Any]:
    """Load a run's last checkpoint into model, optimizer, scheduler and the torch RNG, after checking that it is
    the same model; -> (its step, the temporal state it carried when streaming)."""
    if not ckpt_path.is_file():
        raise FileNotFoundError(f"--resume: no checkpoint {ckpt_path}")
    state = load_checkpoint(ckpt_path)
    saved_model = (state.get("config") or {}).get("model")
    if saved_model is not None and complete_model_config is not None:
        saved_model = complete_model_config(saved_model)
    if model_config is not None and saved_model is not None and saved_model != model_config:
        raise ValueError(f"--resume: the checkpoint's model config differs from this run's:\n{saved_model}\nvs\n{model_config}")
    saved_extra = {k: v for k, v in (state.get("config") or {}).items() if k not in ("train", "model")}
    if extra_config and saved_extra and saved_extra != extra_config:
        warnings.warn(f"--resume: the data settings differ from the checkpoint's ({saved_extra} vs {extra_config}); "
                      "the continuation will not match an uninterrupted run", stacklevel=3)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    return int(state["step"]), state.get("stream_state") if cfg.stream else None


def _init_from(model: nn.Module, path: str | Path) -> None:
    """Start a new run from a weights file (fine-tuning); zero-initialised branches it lacks start fresh."""
    grown = load_weights(model, path)
    if grown:
        print(f"init-from {path}: {len(grown)} parameter tensors of zero-initialised branches start fresh "
              f"({', '.join(sorted({k.rsplit('.', 2)[0] for k in grown}))})", flush=True)


def _loader(dataset, collate_fn, cfg: TrainConfig, start_step: int, end_step: int) -> torch.utils.data.DataLoader:
    """Batches of steps start_step+1 .. end_step: each a pure function of (seed, step), or of the streams' walk."""
    if cfg.stream:
        if not hasattr(getattr(dataset, "index", None), "walk_clips"):
            raise ValueError("streaming training needs a dataset whose .index has walk_clips (lab.dataset.ClipDataset)")
        sampler = StreamSampler(dataset.index, cfg.batch_size, end_step, cfg.seed, start_step)
    else:
        sampler = StepSampler(len(dataset), cfg.batch_size, end_step, cfg.seed, start_step)
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=collate_fn,
        num_workers=cfg.num_workers,
        prefetch_factor=cfg.prefetch_factor if cfg.num_workers > 0 else None,
        persistent_workers=False,
        worker_init_fn=_worker_init if cfg.num_workers > 0 else None,
        generator=torch.Generator().manual_seed(cfg.seed),  # keeps the global RNG untouched (resume equality)
    )


def _step(model: nn.Module, optimizer, scheduler, batch, carried: Any, cfg: TrainConfig, step: int
          ) -> tuple[dict[str, float], float, float, Any]:
    """One optimizer step on a batch of clips; -> (its losses, the gradient norm, the learning rate it used, the
    temporal state it carries to the next step when streaming)."""
    clip_inputs, clip_targets = batch
    if cfg.stream:
        losses, carried = model.forward_clip(clip_inputs, clip_targets, carried, return_state=True)
        carried = _detached(carried)
    else:
        losses = model.forward_clip(clip_inputs, clip_targets)
    loss = total_loss(losses)
    if not torch.isfinite(loss):
        raise FloatingPointError(f"step {step}: loss is {loss.item()} ({ {k: float(v) for k, v in losses.items()} })")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    params = [p for p in model.parameters() if p.grad is not None]
    if cfg.grad_clip > 0:
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip))
    else:
        grad_norm = float(torch.norm(torch.stack([p.grad.norm() for p in params]))) if params else 0.0
    lr = optimizer.param_groups[0]["lr"]
    optimizer.step()
    scheduler.step()
    last = {k: float(v.detach()) for k, v in losses.items()}
    last["loss"] = float(loss.detach())
    return last, grad_norm, lr, carried


def _truncate_curve(path: Path, step: int) -> None:
    """Drop curve rows after `step` (an interrupted run logged steps its last checkpoint does not hold)."""
    if not path.exists():
        return
    rows = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
    path.write_text("".join(r + "\n" for r in rows))


def read_curve(path: str | Path) -> list[dict]:
    """The rows of a curve.jsonl."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


