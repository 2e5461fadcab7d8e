"""What the runtime subcommands share: --config and overrides, config errors, the progress loop."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def add_common_arguments(parser: argparse.ArgumentParser, out_default: str | None = None) -> None:
    parser.add_argument("--config", default=None, metavar="FILE", help="runtime configuration (default: runtime.yaml)")
    parser.add_argument("--out", default=out_default, metavar="RUN", help="run directory (default: output.out_dir)")
    parser.add_argument("--checkpoint", default=None, metavar="FILE", help="model weights (model.checkpoint)")
    parser.add_argument("--max-in-flight", type=int, default=None, metavar="N",
                        help="ticks in flight, live and replay (pipeline.max_in_flight and replay_max_in_flight)")
    parser.add_argument("--ray-address", default=None, metavar="ADDR", help="join this Ray cluster (ray.address)")
    parser.add_argument("--num-cpus", type=int, default=None, metavar="N", help="CPUs of the local Ray (ray.num_cpus)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (output.progress: false)")


def add_model_arguments(parser: argparse.ArgumentParser, short_names: bool = False) -> None:
    """--model-factory (model.factory), and with `short_names` --model NAME (e.g. oracle) for the same key."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--model-factory", default=None, metavar="MOD:CALLABLE",
                       help="run this model instead of the shipped network (model.factory; docs/model-protocol.md)")
    if short_names:  # the names are runtime/model_factory.py's SHORT_NAMES, checked with the config
        group.add_argument("--model", default=None, metavar="NAME",
                           help="a model by short name: oracle = the log's own annotations (runtime/oracle.py)")


def add_record_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--record", action="store_true",
                        help="also write RUN/run.mcap for Foxglove (cameras, boxes, road lines, timings; docs/foxglove.md)")


def add_faults_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--faults", default=None, metavar="SPEC",
                        help="inject faults, e.g. 'corrupt:0.05,dead:CAM_BACK@3,kill:bev@5' (NAME[:ARG][@START[-END]], "
                             "seconds of stream time; replay/faults.py lists them); logged in summary.json's faults")
    parser.add_argument("--fault-seed", type=int, default=0, metavar="N", help="seed of the fault injection (default 0)")


def parse_faults_arg(args: argparse.Namespace):
    """The parsed --faults (None without), or False after printing the one error (the command exits 2)."""
    if getattr(args, "faults", None) is None:
        return None
    from replay.faults import FaultSpecError, parse_faults

    try:
        return parse_faults(args.faults)
    except FaultSpecError as exc:
        print(f"bevstream: --faults: {exc}", file=sys.stderr)
        return False


def _abs(path: str | None) -> str | None:
    return None if path is None else str(Path(path).expanduser().resolve())


def load(args: argparse.Namespace, overrides: dict[str, Any] | None = None):
    """The validated config with the command line's overrides, or None after printing the one error."""
    from runtime.config import ConfigError, load_config, validate_model_options

    common = {
        "output.out_dir": _abs(getattr(args, "out", None)),
        "model.checkpoint": _abs(args.checkpoint),
        "pipeline.max_in_flight": args.max_in_flight,
        "pipeline.replay_max_in_flight": args.max_in_flight,
        "ray.address": args.ray_address,
        "ray.num_cpus": args.num_cpus,
        "output.progress": False if args.no_progress else None,
        "model.factory": getattr(args, "model_factory", None) or getattr(args, "model", None),
    }
    common.update(overrides or {})
    try:
        cfg = load_config(args.config, common)
        validate_model_options(cfg)
        if cfg.model.factory is not None:  # built once here: a bad spec stops the run before any actor starts
            from runtime.model_factory import model_factory

            model_factory(cfg)
        else:
            from runtime.model_adapter import check_checkpoint

            check_checkpoint(cfg.model)
        return cfg
    except ConfigError as exc:
        print(f"bevstream: config error: {exc}", file=sys.stderr)
        return None


def warn_if_random_weights(cfg) -> None:
    from runtime.model_adapter import random_weights_warning

    if cfg.model.factory is None and cfg.model.resolved_checkpoint() is None:
        print(random_weights_warning(), file=sys.stderr)


def run_source(cfg, source, out_dir: Path, expected_samples=None, total: int | None = None, model_factory=None,
               on_record=None, recorder=None, faults=None, fault_seed: int = 0):
    """Stream `source` through a Runtime into `out_dir` with a progress bar; print the report. -> Runtime.

    With `faults` (parsed --faults) the source is wrapped by replay.fault_source (every fault but `kill`), and
    this loop kills the actors of the `kill` faults when their stream time comes (Runtime.kill_stage).
    With a `recorder` (runtime.recording.Recorder, not yet started) every frame set the source yields and every
    record go to it too, and it is closed (its file finished) when the run ends."""
    from tqdm import tqdm

    from runtime.api import Runtime

    kills = None
    if faults:
        from replay.fault_source import with_faults
        from replay.faults import KillSchedule

        source, kills = with_faults(source, faults, fault_seed), KillSchedule(faults)
    print(f"source: {source.describe()}", file=sys.stderr)
    if model_factory is None and cfg.model.factory is not None:  # load() built and checked it once already
        from runtime.model_factory import model_factory as configured_factory

        model_factory = configured_factory(cfg, check=False)
    rt = Runtime(cfg, model_factory=model_factory)
    if recorder is not None:
        source = recorder.start().wrap(source)
    try:
        rt.start()
        print(f"actors: {rt.placement()}", file=sys.stderr)
        with tqdm(total=total, unit="tick", disable=not cfg.output.progress, file=sys.stderr) as bar:
            for record in rt.iterate(source, out_dir=out_dir, expected_samples=expected_samples):
                bar.update(1)
                for fault in kills.due(record.timestamp_us) if kills is not None else ():
                    role = rt.kill_stage(fault.arg, fault=fault.describe(), after_frame_id=record.frame_id)
                    print(f"fault: killed the {role} actor ({fault.describe()})", file=sys.stderr)
                if record.kind == "drop":
                    bar.set_postfix_str(f"drop {record.reason}", refresh=False)
                if recorder is not None:
                    recorder.result(record)
                if on_record is not None:
                    on_record(record)
    finally:
        rt.close()
        if recorder is not None:
            stats = recorder.close()
            print(f"recorded {recorder.path} ({stats['ticks']} ticks, {stats['drops']} drops, {stats['images']} images"
                  f"{', %d items skipped (queue full)' % stats['skipped_full'] if stats['skipped_full'] else ''})",
                  file=sys.stderr)
    print(rt.report.format())
    tracks = ", results_tracking.json" if (Path(out_dir) / "results_tracking.json").is_file() else ""
    print(f"wrote {out_dir}/results_nusc.json{tracks}, ticks.jsonl, summary.json")
    return rt


def make_recorder(out_dir: Path, live: bool, **kwargs):
    """The Recorder of `--record` for a run directory, with the Foxglove layout written beside it."""
    from runtime.recording import LAYOUT_NAME, MCAP_NAME, Recorder, write_layout

    out_dir.mkdir(parents=True, exist_ok=True)
    write_layout(out_dir / LAYOUT_NAME)
    return Recorder(out_dir / MCAP_NAME, drop_when_full=live, **kwargs)
