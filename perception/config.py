"""One loader from a plain dict (the `model:` section of runtime.yaml) onto the model's config dataclasses.

Each section name is a field of ModelConfig and maps onto that field's dataclass; a key that is not a
field is an error naming the full path (`model.bev.chanels: unknown key; expected one of ...`).
Lists become tuples (YAML has no tuples). Missing keys keep the dataclass defaults.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import math
from typing import Any, Iterator, Mapping

from perception.model import ModelConfig


def _convert(value: Any, default: Any, path: str) -> Any:
    if dataclasses.is_dataclass(default) and not isinstance(default, type):
        if not isinstance(value, Mapping):
            raise ValueError(f"{path}: expected a mapping for {type(default).__name__}, got {type(value).__name__}")
        return build_dataclass(type(default), value, path, base=default)
    if isinstance(default, tuple):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{path}: expected a list, got {type(value).__name__}")
        inner = default[0] if default else None
        return tuple(_convert(v, inner, f"{path}[{i}]") if isinstance(inner, tuple) else v for i, v in enumerate(value))
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"{path}: expected true/false, got {value!r}")
        return value
    if isinstance(default, (int, float)) and not isinstance(default, bool):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{path}: expected a number, got {value!r}")
        return float(value) if isinstance(default, float) else value
    if isinstance(default, str) and not isinstance(value, str):
        raise ValueError(f"{path}: expected a string, got {value!r}")
    return value


def build_dataclass(cls: type, values: Mapping[str, Any], path: str, base: Any = None) -> Any:
    """cls(**values) with nested dataclasses built recursively from `base`'s (or cls's) defaults."""
    base = base if base is not None else cls()
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    kwargs = {}
    for key, value in values.items():
        if key not in names:
            raise ValueError(f"{path}.{key}: unknown key; expected one of {names}")
        kwargs[key] = _convert(value, getattr(base, key), f"{path}.{key}")
    try:
        return dataclasses.replace(base, **kwargs)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: {e}") from None


# The range of every numeric key of the model config (a list's elements each), as (low, high, low excluded):
# a NaN score threshold or a negative max_detections is a config error at start, not empty ticks later.
# Keys are matched as patterns against the dotted path; every numeric key must match one (a test checks it).
INF = math.inf
RANGES: dict[str, tuple[float, float, bool]] = {
    "model.grid.[xy]_m??": (-INF, INF, False),
    "model.grid.resolution": (0.0, INF, True),
    "model.rectify.image_size": (16, 4096, False),
    "model.rectify.focal": (0.0, INF, True),
    "model.backbone.*": (1, INF, False),
    "model.seg.*": (1, INF, False),
    "model.bev.channels": (1, INF, False),
    "model.bev.heads": (1, INF, False),
    "model.bev.num_layers": (1, INF, False),
    "model.bev.ffn_ratio": (0, INF, False),
    "model.bev.context_blocks": (0, INF, False),
    "model.bev.pillar_heights": (-INF, INF, False),
    "model.video.*_queue_length": (0, INF, False),
    "model.video.push_period_ms": (0.0, INF, True),
    "model.video.push_distance_m": (0.0, INF, True),
    "model.video.*_channels": (1, INF, False),
    "model.video.world_cells": (1, INF, False),
    "model.video.recenter_cells": (0, INF, False),
    "model.video.update_radius_m": (0.0, INF, True),
    "model.video.motion_wide_dilation": (1, INF, False),
    "model.detection.anchor_sizes": (0.0, INF, True),
    "model.detection.anchor_yaws": (-INF, INF, False),
    "model.detection.hidden_channels": (1, INF, False),
    "model.detection.velocity_scale": (0.0, INF, True),
    "model.detection.pos_iou": (0.0, 1.0, False),
    "model.detection.neg_iou": (0.0, 1.0, False),
    "model.detection.focal_alpha": (0.0, 1.0, False),
    "model.detection.focal_gamma": (0.0, INF, False),
    "model.detection.smooth_l1_beta": (0.0, INF, True),
    "model.detection.*_weight": (0.0, INF, False),
    "model.detection.code_weights": (0.0, INF, False),
    "model.detection.prior_prob": (0.0, 1.0, True),
    "model.detection.score_threshold": (0.0, 1.0, False),
    "model.detection.nms_pre": (1, INF, False),
    "model.detection.nms_iou": (0.0, 1.0, False),
    "model.detection.nms_radius_m": (0.0, INF, False),
    "model.detection.still_speed_mps": (0.0, INF, False),
    "model.detection.max_detections": (1, INF, False),
    "model.detection.symmetric_yaw_classes": (0, INF, False),
    "model.road.hidden_channels": (1, INF, False),
    "model.road.upsample": (1, INF, False),
    "model.road.pos_weight": (0.0, INF, True),
    "model.road.thickness_m": (0.0, INF, True),
    "model.road.threshold": (0.0, 1.0, False),
    "model.road.min_length_m": (0.0, INF, False),
    "model.road.simplify_m": (0.0, INF, False),
    "model.loss.*": (0.0, INF, False),
    "model.attributes.*": (0.0, INF, False),
    "model.depth.min_m": (0.0, INF, True),
    "model.depth.max_m": (0.0, INF, True),
    "model.depth.bins": (1, INF, False),
    "model.depth.hidden_channels": (1, INF, False),
    "model.depth.loss_weight": (0.0, INF, False),
    "model.depth.window_m": (0.0, INF, True),
    "model.tracking.position_noise_m": (0.0, INF, True),
    "model.tracking.velocity_noise_mps": (0.0, INF, True),
    "model.tracking.acceleration_mps2": (0.0, INF, False),
    "model.tracking.gate_m": (0.0, INF, True),
    "model.tracking.max_age_s": (0.0, INF, True),
    "model.tracking.still_track_speed_mps": (0.0, INF, False),
    "model.tracking.score_memory_s": (0.0, INF, True),
    "model.tracking.score_track_weight": (0.0, 1.0, False),
    "model.num_cameras": (1, INF, False),
}


def numeric_leaves(obj: Any, path: str = "model") -> Iterator[tuple[str, float]]:
    """(dotted path, value) of every number in a config dataclass, a list's elements under the list's path."""
    if dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            yield from numeric_leaves(getattr(obj, f.name), f"{path}.{f.name}")
    elif isinstance(obj, (tuple, list)):
        for item in obj:
            yield from numeric_leaves(item, path)
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield path, obj


def range_of(path: str) -> tuple[float, float, bool] | None:
    """The RANGES entry whose pattern matches `path` (the first), or None."""
    return next((r for pattern, r in RANGES.items() if fnmatch.fnmatchcase(path, pattern)), None)


def check_ranges(config: Any, path: str = "model") -> None:
    """ValueError naming the first numeric key that is not finite or lies outside its RANGES entry."""
    for key, value in numeric_leaves(config, path):
        bounds = range_of(key)
        low, high, open_low = bounds if bounds is not None else (-INF, INF, False)
        if not math.isfinite(value):
            raise ValueError(f"{key}: must be a finite number, got {value}")
        if value < low or value > high or (open_low and value == low):
            side = "(" if open_low else "["
            raise ValueError(f"{key}: must lie within {side}{low:g}, {high:g}], got {value}")


def model_config_from_dict(values: Mapping[str, Any] | None, path: str = "model") -> ModelConfig:
    """The `model:` mapping of runtime.yaml -> ModelConfig (None or {} -> all defaults), every number range-checked."""
    if values is None:
        return ModelConfig()
    if not isinstance(values, Mapping):
        raise ValueError(f"{path}: expected a mapping, got {type(values).__name__}")
    config = build_dataclass(ModelConfig, values, path)
    check_ranges(config, path)
    return config


def merge_model_options(saved: Mapping[str, Any] | None, overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """A checkpoint's saved model config with runtime.yaml's `model:` keys laid over it, key by key.

    Post-processing knobs (score threshold, NMS, road threshold) change freely this way; an
    architecture key that disagrees with the weights fails loudly when the weights are loaded.
    """
    merged: dict[str, Any] = dict(saved or {})
    for key, value in (overrides or {}).items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge_model_options(merged[key], value)
        else:
            merged[key] = value
    return merged


def model_config_to_dict(config: ModelConfig) -> dict[str, Any]:
    """ModelConfig -> plain dict (tuples as lists), the inverse of model_config_from_dict."""

    def plain(v):
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        return v

    def walk(obj):
        return {f.name: (walk(getattr(obj, f.name)) if dataclasses.is_dataclass(getattr(obj, f.name)) else plain(getattr(obj, f.name))) for f in dataclasses.fields(obj)}

    return walk(config)


__all__ = ["RANGES", "build_dataclass", "check_ranges", "merge_model_options", "model_config_from_dict",
           "model_config_to_dict", "numeric_leaves", "range_of"]
