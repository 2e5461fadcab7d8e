"""Weights files and training checkpoints: save atomically, load with a clear error, export the small file the
runtime ships, average a model soup, update a config section in place, and build a trained model for inference.

A training checkpoint holds model, optimizer, scheduler, step, config, the torch RNG state (and the temporal
state carried between streaming steps); a weights file holds the model and its config only.
"""
from __future__ import annotations

import fnmatch
import os
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from perception.config import merge_model_options, model_config_from_dict
from perception.model import BEVStreamModel

CHECKPOINT_FORMAT = 1


# ---- checkpoints ----------------------------------------------------------------------------------------


def save_checkpoint(path: str | Path, model: nn.Module, optimizer, scheduler, step: int, config: dict, stream_state: Any = None) -> Path:
    """Atomically write model, optimizer, scheduler, step, config, the torch RNG state and, in streaming
    training, the temporal state carried into the next step."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "format": CHECKPOINT_FORMAT,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "step": int(step),
        "config": config,
        "torch_rng": torch.get_rng_state(),
        "stream_state": stream_state,
    }
    return _save_atomically(state, path)


def _save_atomically(obj: dict, path: Path) -> Path:
    """torch.save to a temporary file, then rename: a crash mid-write never leaves a torn file at `path`."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path) -> dict:
    """The dict save_checkpoint wrote (on CPU); a clear error for a file that is not one."""
    path = Path(path)
    if path.is_dir():
        path = path / "last.pt"
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    state = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(state, dict) or "model" not in state or "step" not in state:
        raise ValueError(f"{path} is not a bevstream training checkpoint (keys: {list(state)[:8] if isinstance(state, dict) else type(state)})")
    return state


# Branches whose output starts at exactly zero (perception/motion.py, the depth-weighted output of each
# attention layer), or that no output reads until then (the depth head): weights trained without them load
# into a model that has them and it computes what those weights computed, so training can grow them.
ZERO_INIT_BRANCHES = ("video.motion.*", "depth_head.*", "bev_encoder.layers.*.depth_out.*", "bev_encoder.fine_*")


def load_weights(model: nn.Module, path: str | Path) -> list[str]:
    """Copy the weights of a checkpoint or exported weights file into `model` (same architecture), except
    that parameters of a zero-initialised branch (ZERO_INIT_BRANCHES) may be absent: they keep their
    initialisation. Returns the names of those grown parameters; any other mismatch raises ValueError."""
    return _copy_weights(model, load_checkpoint(path), path)


def _copy_weights(model: nn.Module, state: dict, path: str | Path) -> list[str]:
    try:
        missing, unexpected = model.load_state_dict(state["model"], strict=False)
    except RuntimeError as exc:
        raise ValueError(f"{path}: weights do not fit this model: {str(exc).splitlines()[0]}") from None
    grown = [k for k in missing if any(fnmatch.fnmatchcase(k, pattern) for pattern in ZERO_INIT_BRANCHES)]
    wrong = sorted(set(missing) - set(grown)) + sorted(unexpected)
    if wrong:
        raise ValueError(f"{path}: weights do not fit this model: missing {sorted(set(missing) - set(grown))[:5]}, "
                         f"unexpected {sorted(unexpected)[:5]}")
    return grown


# ---- trained models -------------------------------------------------------------------------------------


# Parameters no output reads unless depth-aware attention is on (without it, the depth head supervises the
# camera features in training only).
TRAINING_ONLY = ("depth_head.",)


def export_weights(checkpoint: str | Path, path: str | Path) -> Path:
    """Write the small file the runtime ships: model weights + model config (+ step), no optimizer state, and
    no training-only depth head (its config is switched off; a fine-tune from the file grows the head afresh).
    With depth-aware attention the encoder reads the head, so it stays."""
    state = load_checkpoint(checkpoint)
    config = dict(state.get("config") or {})
    model_config = dict(config.get("model") or {})
    depth_read = bool((model_config.get("depth") or {}).get("attention", False))
    model = {k: v for k, v in state["model"].items() if depth_read or not k.startswith(TRAINING_ONLY)}
    if "depth" in model_config and not depth_read:
        model_config["depth"] = {**model_config["depth"], "enabled": False}
    config["model"] = model_config
    return _write_weights_file(path, model, {**state, "config": config})


def average_weights(paths: Sequence[str | Path], path: str | Path) -> Path:
    """Write the parameter-wise mean of weights files of one architecture (a model soup: fine-tunes from one
    start lie in one basin, and their mean often scores above each). Buffers that are not floating point
    (BatchNorm's batch counters) and the config come from the first file; calibrate the result again
    (`bevstream calibrate`), since its errors are its own."""
    if len(paths) < 2:
        raise ValueError(f"average_weights: need at least two weights files, got {len(paths)}")
    states = [load_checkpoint(p) for p in paths]
    first = states[0]["model"]
    layout = {k: (tuple(v.shape), v.dtype) for k, v in first.items()}
    for p, state in zip(paths[1:], states[1:]):
        other = {k: (tuple(v.shape), v.dtype) for k, v in state["model"].items()}
        if other != layout:
            differ = sorted(k for k in set(layout) | set(other) if layout.get(k) != other.get(k))
            raise ValueError(f"average_weights: {p} is another architecture than {paths[0]} (e.g. {differ[:3]})")
    model = {k: sum(state["model"][k] for state in states) / len(states) if v.is_floating_point() else v
             for k, v in first.items()}
    return _write_weights_file(path, model, states[0],
                               averaged_from=[{"path": _portable(p), "step": state["step"]} for p, state in zip(paths, states)])


def _portable(path: str | Path) -> str:
    """A path to record in a weights file: relative to the working directory when under it, else the file name
    (a shipped file must not carry one machine's absolute paths)."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return path.name if path.is_absolute() else str(path)


def _write_weights_file(path: str | Path, model: dict, state: dict, **extra) -> Path:
    """A weights file: `model` with the step and the model/train config of checkpoint `state`, plus `extra`."""
    config = state.get("config") or {}
    out = {
        "format": CHECKPOINT_FORMAT,
        "model": model,
        "step": state["step"],
        "config": {"model": config.get("model"), "train": config.get("train")},
        "torch_rng": torch.get_rng_state(),
        **extra,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return _save_atomically(out, path)


def save_model_options(path: str | Path, section: str, values: dict) -> Path:
    """Update one section of the model config saved in a weights file with `values` (e.g. 'attributes', the
    speed thresholds `bevstream calibrate` fits), keeping the weights and everything else as they are."""
    state = load_checkpoint(path)
    config = dict(state.get("config") or {})
    model = dict(config.get("model") or {})
    model[section] = {**(model.get(section) or {}), **values}
    model_config_from_dict(model)  # the new section must validate before the file changes
    config["model"] = model
    state["config"] = config
    return _save_atomically(state, Path(path))


def load_trained_model(path: str | Path, options: dict | None = None):
    """A BEVStreamModel in eval mode with the weights of a checkpoint or exported weights file.

    The model config is the one saved with the weights (model_config_to_dict form) with `options`
    (runtime.yaml's model section, e.g. a detection score threshold) laid over it.
    """
    state = load_checkpoint(path)
    saved = (state.get("config") or {}).get("model")
    model = BEVStreamModel(model_config_from_dict(merge_model_options(saved, options)))
    _copy_weights(model, state, path)  # weights older than a zero-initialised branch load without it
    model.eval()
    return model
