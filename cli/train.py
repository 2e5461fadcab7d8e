"""`bevstream train`: train the perception model on clips of nuScenes-format dataroots."""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

HELP = "Train the perception model on clips of consecutive 12 Hz frames from nuScenes-format dataroots."


def parse_lr_scale(item: str) -> tuple[str, float]:
    """'PATTERN=FACTOR' -> (PATTERN, FACTOR)."""
    pattern, sep, factor = item.rpartition("=")
    try:
        value = float(factor)
    except ValueError:
        value = None
    if not sep or not pattern or value is None:
        raise ValueError(f"--lr-scale expects PATTERN=FACTOR, got {item!r}")
    return pattern, value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", action="append", required=True, metavar="DIR",
                        help="nuScenes-format dataroot (repeat for several); e.g. the output of `bevstream sim`")
    parser.add_argument("--version", default="v1.0-mini", help="devkit table version of every dataroot (default v1.0-mini)")
    parser.add_argument("--split", default="train",
                        help="scenes to train on: 'train' (the devkit's train split of the version: mini_train / train), "
                             "'val', a devkit split name, or 'all' (default train)")
    parser.add_argument("--out", required=True, metavar="CKPT_DIR", help="checkpoints, curve.jsonl and train_args.json go here")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps in total (default: training.steps, 1000)")
    parser.add_argument("--clip-length", type=int, default=4, help="frames per clip; the temporal state runs through it (default 4)")
    parser.add_argument("--clip-stride", type=int, default=None, help="cycles between clip starts (default: the clip length)")
    parser.add_argument("--stream", action="store_true",
                        help="streaming training: each batch row walks whole scenes, clip after consecutive clip, and the "
                             "temporal state (detached) carries from one step into the next, so frames train with the full "
                             "queues and hidden raster they have at inference (--clip-stride is not used)")
    parser.add_argument("--drop-prob", type=float, default=0.25,
                        help="probability of skipping each further frame inside a clip: variable time steps (default 0.25)")
    parser.add_argument("--max-skip", type=int, default=2, help="at most this many frames skipped in a row (default 2)")
    parser.add_argument("--batch", type=int, default=None, help="clips per step (default 1)")
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate (default 3e-4)")
    parser.add_argument("--lr-scale", action="append", default=[], metavar="PATTERN=FACTOR",
                        help="parameters whose name matches the fnmatch PATTERN learn at lr x FACTOR (repeatable; the "
                             "first match wins), e.g. 'bev_encoder.layers.*.depth_out.*=10' for a branch grown from zero")
    parser.add_argument("--workers", type=int, default=None, help="DataLoader worker processes (default 1)")
    parser.add_argument("--checkpoint-every", type=int, default=None, help="steps between checkpoints (default 500)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data order, augmentation and initial weights")
    parser.add_argument("--resume", action="store_true", help="continue from CKPT_DIR/last.pt")
    parser.add_argument("--init-from", type=Path, default=None, metavar="WEIGHTS",
                        help="start from these weights (checkpoint or exported file) with a fresh optimizer and schedule")
    parser.add_argument("--stop-at", type=int, default=None, help="stop this run after that step (resume later)")
    parser.add_argument("--no-video", action="store_true", help="switch the video module off (the single-frame ablation)")
    parser.add_argument("--keyframes-only", action="store_true", help="clips of keyframes only (2 Hz; e.g. real data without sweeps)")
    parser.add_argument("--scene-yaw-deg", type=float, default=0.0, help="BEV-consistent random scene rotation up to this angle")
    parser.add_argument("--no-photometric", action="store_true", help="switch the per-camera photometric jitter off")
    parser.add_argument("--min-points", type=int, default=1,
                        help="drop boxes with fewer lidar+radar points (the evaluation ignores empty boxes; default 1)")
    parser.add_argument("--allow-missing-road", action="store_true", help="train on dataroots without road geometry (empty road targets)")
    parser.add_argument("--export-weights", type=Path, default=None, metavar="FILE",
                        help="at the end, write the weights (no optimizer state) to FILE, e.g. perception/weights/bevstream.pt")
    parser.add_argument("--threads", type=int, default=None, help="torch threads of the training process (default: torch's)")
    parser.add_argument("--config", type=Path, default=None, help="runtime.yaml whose model section configures the model")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


class _Refused(Exception):
    """A configuration or data problem: printed as one line, exit code 2."""


def _model_config(args: argparse.Namespace):
    """(ModelConfig, its dict) from runtime.yaml's model options, --no-video laid over them."""
    from perception.config import model_config_from_dict, model_config_to_dict
    from runtime.config import ConfigError, load_config

    try:
        options = dict(load_config(args.config).model.options)
        if args.no_video:
            options = _merge(options, {"video": {"enabled": False}})
        model_cfg = model_config_from_dict(options)
    except ConfigError as exc:
        raise _Refused(str(exc)) from None
    except ValueError as exc:
        raise _Refused(f"model config: {exc}") from None
    return model_cfg, model_config_to_dict(model_cfg)


def _train_config(args: argparse.Namespace):
    """(TrainConfig, the devkit split trained on or None) from the flags."""
    from lab.devkit import eval_set_name
    from lab.training import TrainConfig

    train_kwargs = {"seed": args.seed, "progress": not args.no_progress, "stream": args.stream}
    try:
        train_kwargs["lr_scales"] = tuple(parse_lr_scale(item) for item in args.lr_scale)
        for key, value in (("steps", args.steps), ("batch_size", args.batch), ("lr", args.lr),
                           ("num_workers", args.workers), ("checkpoint_every", args.checkpoint_every)):
            if value is not None:
                train_kwargs[key] = value
        return TrainConfig(**train_kwargs), None if args.split == "all" else eval_set_name(args.version, args.split)
    except ValueError as exc:
        raise _Refused(str(exc)) from None


def _dataset(args: argparse.Namespace, model_cfg, split):
    """(the clip data, the ClipDataset over it) of --data."""
    from lab.augment import PhotometricConfig
    from lab.dataset import AugmentConfig, ClipDataset, clip_data

    try:
        data = clip_data(args.data, args.version, split, args.keyframes_only, args.clip_length, args.clip_stride,
                         args.drop_prob, args.max_skip, args.seed)
    except (FileNotFoundError, ValueError) as exc:
        raise _Refused(str(exc)) from None
    augment = AugmentConfig(photometric=None if args.no_photometric else PhotometricConfig(), scene_yaw_deg=args.scene_yaw_deg)
    return data, ClipDataset(data.index, data.roots, model_cfg, augment=augment, min_points=args.min_points,
                             require_road=not args.allow_missing_road)


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except _Refused as exc:
        print(f"bevstream train: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    import torch

    from lab.dataset import collate_clips
    from lab.training import seed_everything, train
    from perception.checkpoint import export_weights
    from perception.config import model_config_from_dict, model_config_to_dict
    from perception.model import BEVStreamModel

    model_cfg, model_dict = _model_config(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    train_cfg, split = _train_config(args)
    data, dataset = _dataset(args, model_cfg, split)
    cycles = sum(len(s.cycles) for s in data.scenes)
    clips = (f"streams of consecutive clips of {args.clip_length}" if args.stream else f"{len(data.index)} clips of {args.clip_length}")
    print(f"bevstream train: {len(data.scenes)} scene(s), {cycles} frame sets, {clips} "
          f"(drop {args.drop_prob:g}); video module {'on' if model_cfg.video.enabled else 'OFF'}; "
          f"{train_cfg.steps} steps x batch {train_cfg.batch_size} -> {args.out}", flush=True)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    _write_train_args(out, args, data.scenes, torch.get_num_threads())

    seed_everything(args.seed)  # the initial weights depend on the seed only
    model = BEVStreamModel(model_cfg)
    try:
        result = train(model, dataset, collate_clips, train_cfg, out, resume=args.resume, model_config=model_dict,
                       extra_config={"data": [f"{r}@{v}" for r, v in data.roots], "clip_length": args.clip_length,
                                     "drop_prob": args.drop_prob, "split": split,
                                     **({"stream": True} if args.stream else {})},
                       stop_at=args.stop_at, init_from=args.init_from,
                       complete_model_config=lambda saved: model_config_to_dict(model_config_from_dict(saved)))
    except (FileNotFoundError, ValueError) as exc:
        raise _Refused(str(exc)) from None
    losses = "  ".join(f"{k} {v:.4f}" for k, v in result.last_losses.items())
    print(f"bevstream train: {result.steps_run} steps in {result.wall_s:.1f} s "
          f"({result.wall_s / max(result.steps_run, 1):.2f} s/step), now at step {result.final_step}; {losses}")
    if result.checkpoint is not None:
        print(f"checkpoint: {result.checkpoint}  (curve: {out / 'curve.jsonl'})")
    if args.export_weights is not None:
        path = export_weights(out / "last.pt", args.export_weights)
        print(f"weights: {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


def _write_train_args(out: Path, args: argparse.Namespace, scenes: list, threads: int) -> None:
    """OUT/train_args.json: the command, its arguments, the scenes trained on, the torch threads."""
    command = "bevstream " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv and sys.argv[0].endswith("bevstream") else None
    (out / "train_args.json").write_text(json.dumps(
        {"command": command, "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if not k.startswith("_")},
         "scenes": [f"{s.dataroot}:{s.scene}" for s in scenes], "torch_threads": threads}, indent=2))
