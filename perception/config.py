"""One loader from a plain dict (the `model:` section of runtime.yaml) onto the model's config dataclasses.

Each section name is a field of ModelConfig and maps onto that field's dataclass; a key that is not a
field is an error naming the full path (`model.bev.chanels: unknown key; expected one of ...`).
Lists become tuples (YAML has no tuples). Missing keys keep the dataclass defaults.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

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


def model_config_from_dict(values: Mapping[str, Any] | None, path: str = "model") -> ModelConfig:
    """The `model:` mapping of runtime.yaml -> ModelConfig (None or {} -> all defaults)."""
    if values is None:
        return ModelConfig()
    if not isinstance(values, Mapping):
        raise ValueError(f"{path}: expected a mapping, got {type(values).__name__}")
    return build_dataclass(ModelConfig, values, path)


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


__all__ = ["model_config_from_dict", "model_config_to_dict", "merge_model_options", "build_dataclass"]
