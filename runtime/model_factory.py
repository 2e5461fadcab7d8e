"""Which model the runtime runs: runtime.yaml's `model.factory` turned into the zero-arg factory each actor calls.

    model.factory: null                     the shipped network (runtime/model_adapter.py ModelFactory)
    model.factory: "package.module:name"    any implementation of runtime/model_protocol.py
    model.factory: oracle                   a short name (SHORT_NAMES): the log's own annotations (runtime/oracle.py)

`name` is imported in the driver. A class is the factory itself (each actor calls `name()` for its model);
any other callable is called once here with the RuntimeConfig and returns the factory (so it can read the
config, as the oracle reads source.nuscenes; a ValueError it raises is reported as the problem). The factory must pickle (Ray ships it to the actors). Every
problem, found here before any actor starts, is one ConfigError naming model.factory.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable

from runtime.config import ConfigError, RuntimeConfig
from runtime.model_protocol import REQUIRED_METHODS, missing_methods

SHORT_NAMES: dict[str, str] = {"oracle": "runtime.oracle:oracle_factory"}


def _error(spec: str, problem: str) -> ConfigError:
    return ConfigError(f"runtime.yaml: model.factory: {spec!r}: {problem}")


def _first_line(exc: BaseException, with_type: bool = True) -> str:
    text = str(exc).strip()
    if not text:
        return type(exc).__name__
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if with_type else text.splitlines()[0]


def import_callable(spec: str) -> Callable[..., Any]:
    """'package.module:name' (or a short name) -> the callable it names."""
    target = SHORT_NAMES.get(spec, spec)
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise _error(spec, f"expected 'package.module:callable' or one of {sorted(SHORT_NAMES)}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise _error(spec, f"cannot import module {module_name!r} ({_first_line(exc)})") from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise _error(spec, f"module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise _error(spec, f"{attr!r} is a {type(obj).__name__}, not a callable")
    return obj


def factory_from_spec(spec: str, cfg: RuntimeConfig, check: bool = True) -> Callable[[], Any]:
    """The picklable zero-arg factory `spec` names; with `check`, built once here to see that it pickles and
    gives a model with every required method (a failure is a ConfigError naming model.factory)."""
    obj = import_callable(spec)
    if isinstance(obj, type):
        factory = obj
    else:
        try:
            factory = obj(cfg)
        except ValueError as exc:  # the builder names a configuration problem in its own words
            raise _error(spec, _first_line(exc, with_type=False)) from None
        except Exception as exc:  # noqa: BLE001 - any failure of the user's builder is a configuration problem
            raise _error(spec, f"calling it with the runtime config failed: {_first_line(exc)}") from None
        if not callable(factory):
            raise _error(spec, f"it returned a {type(factory).__name__}, not a zero-arg factory of a model")
    if check:
        check_factory(spec, factory)
    return factory


def check_factory(spec: str, factory: Callable[[], Any]) -> None:
    """The factory pickles (as Ray ships it) and builds a model that has every required protocol method."""
    from ray import cloudpickle

    try:
        cloudpickle.dumps(factory)
    except Exception as exc:  # noqa: BLE001 - whatever the pickler refuses
        raise _error(spec, f"the factory does not pickle, so it cannot reach the actors: {_first_line(exc)}") from None
    try:
        model = factory()
    except Exception as exc:  # noqa: BLE001 - a model that cannot be built is a configuration problem here
        raise _error(spec, f"building the model failed: {_first_line(exc)}") from None
    missing = missing_methods(model)
    if missing:
        raise _error(spec, f"the model it builds ({type(model).__name__}) lacks the protocol method(s) {missing} "
                           f"(runtime/model_protocol.py: {', '.join(REQUIRED_METHODS)})")


def model_factory(cfg: RuntimeConfig, check: bool = True) -> Callable[[], Any]:
    """The factory of the configured model: model.factory's, or the shipped network's (weights from
    model.checkpoint, options from the rest of `model:`)."""
    if cfg.model.factory is None:
        from runtime.model_adapter import ModelFactory

        return ModelFactory.from_config(cfg.model)
    return factory_from_spec(cfg.model.factory, cfg, check=check)
