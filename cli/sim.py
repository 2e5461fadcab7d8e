"""`bevstream sim`: write simulated drives as a nuScenes-format dataset (replay/export/dataset.py)."""
from __future__ import annotations

import argparse
from pathlib import Path

HELP = "Generate simulated drives as a nuScenes-format dataroot that nuscenes-devkit loads."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="dataroot to write (must be empty unless --overwrite)")
    parser.add_argument("--scenes", type=int, default=10, help="number of scenes (v1.0-mini has 10 names: 8 train + 2 val)")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed; the same seed gives byte-identical files")
    parser.add_argument("--version", default="v1.0-mini", choices=("v1.0-mini", "v1.0-trainval"),
                        help="table folder and scene-name source (mini_train/mini_val or train/val)")
    parser.add_argument("--split", default="auto", choices=("auto", "train", "val"),
                        help="which devkit split the scene names come from; auto puts ~20%% of the scenes in val")
    parser.add_argument("--width", type=int, default=800, help="camera image width in pixels")
    parser.add_argument("--height", type=int, default=450, help="camera image height in pixels")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per scene (2 keyframes per second)")
    parser.add_argument("--workers", type=int, default=2, help="processes exporting scenes in parallel")
    parser.add_argument("--jpeg-quality", type=int, default=90, help="JPEG quality of the camera images")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing export in --out")
    parser.add_argument("--annotate-every-frame", action="store_true",
                        help="12 Hz ground truth: every camera cycle a sample with annotations and a lidar sweep "
                             "(for streaming evaluation); default: keyframes at 2 Hz, sweeps between")


def run(args: argparse.Namespace) -> int:
    from replay.export.dataset import ExportConfig, export_dataset

    cfg = ExportConfig(
        out=args.out,
        scenes=args.scenes,
        seed=args.seed,
        version=args.version,
        split=args.split,
        width=args.width,
        height=args.height,
        duration_s=args.duration,
        jpeg_quality=args.jpeg_quality,
        workers=args.workers,
        overwrite=args.overwrite,
        annotate_every_frame=args.annotate_every_frame,
    )
    try:
        cfg.validate()
    except ValueError as exc:
        print(f"bevstream sim: {exc}")
        return 2
    rate = "12 Hz samples" if cfg.annotate_every_frame else "2 Hz samples"
    print(f"bevstream sim: {cfg.scenes} scene(s) x {cfg.duration_s:g} s at {cfg.width}x{cfg.height}, {rate} -> {cfg.out}",
          flush=True)
    try:
        summary = export_dataset(cfg, progress=True)
    except FileExistsError as exc:
        print(f"bevstream sim: {exc}")
        return 2
    names = ", ".join(f"{n} ({s})" for n, s in summary.scenes)
    print(
        f"wrote {summary.version} at {summary.dataroot}: {len(summary.scenes)} scenes [{names}], "
        f"{summary.samples} samples, {summary.camera_images} camera images, {summary.annotations} annotations "
        f"in {summary.seconds:.1f} s"
    )
    print(f"load it with NuScenes(version='{summary.version}', dataroot='{summary.dataroot}')")
    return 0
