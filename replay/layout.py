"""Where bevstream's own ground truth lives beside a nuScenes dataroot.

The devkit's thirteen tables do not model road geometry or per-pixel labels, so the exporter
writes them under `<dataroot>/bevstream/`:

    <dataroot>/bevstream/road_geometry/<scene name>.json
        {"scene": "<name>", "frame": "global",
         "lane_divider": [{"points": [[x, y], ...], "dashed": true|false}, ...],
         "road_edge":    [{"points": [[x, y], ...]}, ...]}
        ordered polylines in global coordinates (metres, the scene's map frame).

    <dataroot>/bevstream/labels/<sample_data filename with its suffix replaced by .png>
        e.g. samples/CAM_FRONT/x.jpg -> bevstream/labels/samples/CAM_FRONT/x.png:
        a single-channel uint8 PNG, same size as the image, value = index in
        schema.classes.SEG_CLASSES.

Real nuScenes has neither; readers return None where the files are absent.
"""
from __future__ import annotations

from pathlib import Path, PurePosixPath

BEVSTREAM_DIR = "bevstream"


def road_geometry_path(dataroot: str | Path, scene_name: str) -> Path:
    return Path(dataroot) / BEVSTREAM_DIR / "road_geometry" / f"{scene_name}.json"


def label_path(dataroot: str | Path, sample_data_filename: str) -> Path:
    """The label PNG of a camera image, from the image's sample_data 'filename'."""
    rel = PurePosixPath(sample_data_filename).with_suffix(".png")
    return Path(dataroot) / BEVSTREAM_DIR / "labels" / rel
