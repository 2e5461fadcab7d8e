"""Pictures for the README: the six simulated cameras of one keyframe beside their label images.

    python docs/figures.py --dataroot DIR [--version v1.0-trainval] [--out docs/images/sim_cameras.jpg]

Reads an export of `bevstream sim` through the devkit; label colours follow schema.classes.SEG_CLASSES.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from nuscenes.nuscenes import NuScenes
from PIL import Image

from schema.classes import SEG_CLASSES
from replay.layout import label_path
from schema.messages import CAMERA_CHANNELS

# One colour per SEG_CLASSES entry (Cityscapes-like).
LABEL_COLOURS = np.array([
    (0, 0, 0), (70, 130, 180), (128, 64, 128), (255, 255, 255), (250, 170, 30), (244, 35, 232),
    (70, 70, 70), (0, 0, 142), (220, 20, 60), (119, 11, 32), (255, 120, 0)], np.uint8)
assert len(LABEL_COLOURS) == len(SEG_CLASSES)


def camera_mosaic(nusc: NuScenes, sample: dict, tile_width: int = 320) -> Image.Image:
    """2 rows (RGB, labels) x 6 cameras, in CAMERA_CHANNELS order."""
    tiles = []
    for channel in CAMERA_CHANNELS:
        sd = nusc.get("sample_data", sample["data"][channel])
        rgb = Image.open(Path(nusc.dataroot) / sd["filename"]).convert("RGB")
        labels = np.asarray(Image.open(label_path(nusc.dataroot, sd["filename"])))
        tile_height = round(rgb.height * tile_width / rgb.width)
        tiles.append((rgb.resize((tile_width, tile_height)),
                      Image.fromarray(LABEL_COLOURS[labels]).resize((tile_width, tile_height), Image.NEAREST)))
    h = tiles[0][0].height
    canvas = Image.new("RGB", (tile_width * len(tiles), 2 * h))
    for i, (rgb, lab) in enumerate(tiles):
        canvas.paste(rgb, (i * tile_width, 0))
        canvas.paste(lab, (i * tile_width, h))
    return canvas


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataroot", required=True)
    ap.add_argument("--version", default="v1.0-trainval")
    ap.add_argument("--sample", type=int, default=10, help="index of the keyframe in the first scene")
    ap.add_argument("--out", default="docs/images/sim_cameras.jpg")
    args = ap.parse_args()
    nusc = NuScenes(args.version, args.dataroot, verbose=False)
    token = nusc.scene[0]["first_sample_token"]
    for _ in range(args.sample):
        token = nusc.get("sample", token)["next"] or token
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    camera_mosaic(nusc, nusc.get("sample", token)).save(out, quality=85)
    print(out)


if __name__ == "__main__":
    main()
