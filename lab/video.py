"""A scene video of a run: every tick as one composite frame (the six cameras with the tick's projected boxes and,
where the result carries it, its segmentation; beside them the BEV with boxes and road lines), written as an MP4.

The MP4 is written by imageio with imageio-ffmpeg, whose wheel bundles an ffmpeg binary: no system ffmpeg.
A run directory keeps results and segmentation labels (RUN/seg/) but not images, so `run_frames` reads the images
again from the dataroot the run replayed and pairs each tick with its frame set by scene and sensor timestamp.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Iterator

import imageio.v2 as imageio
import numpy as np
from PIL import Image

from lab.viz import DRAW_MIN_SCORE, draw_bev, draw_cameras
from runtime.sink import SEG_DIR, read_seg
from schema.messages import FrameSet
from schema.results import TickResult

MACRO_BLOCK = 16  # H.264 frames are whole 16 x 16 macroblocks: frames are padded to a multiple of it
TILE_WIDTH = 384  # one camera's width in the composite (a 1600 x 900 camera becomes 384 x 216)


def _pad(img: Image.Image, block: int = MACRO_BLOCK) -> Image.Image:
    w, h = img.size
    pw, ph = -(-w // block) * block, -(-h // block) * block
    if (pw, ph) == (w, h):
        return img
    canvas = Image.new("RGB", (pw, ph))
    canvas.paste(img, (0, 0))
    return canvas


def composite(frame_set: FrameSet, result: TickResult, min_score: float = DRAW_MIN_SCORE,
              tile_width: int = TILE_WIDTH) -> Image.Image:
    """The cameras (2 x 3 grid) and, to their right, the BEV at the grid's height; padded to whole macroblocks."""
    cams = draw_cameras(frame_set, result, width=tile_width, min_score=min_score)
    bev = draw_bev(result, min_score=min_score).resize((cams.height, cams.height))
    frame = Image.new("RGB", (cams.width + bev.width, cams.height))
    frame.paste(cams, (0, 0))
    frame.paste(bev, (cams.width, 0))
    return _pad(frame)


def write_video(frames: Iterable[Image.Image], path: str | Path, fps: float) -> int:
    """Write the frames (all of the first one's size) as an H.264 MP4; -> the number of frames written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with imageio.get_writer(path, fps=fps, codec="libx264", quality=7, macro_block_size=MACRO_BLOCK,
                            ffmpeg_log_level="error") as writer:
        for img in frames:
            writer.append_data(np.asarray(img.convert("RGB")))
            count += 1
    return count


def read_ticks(ticks_path: str | Path) -> list[TickResult]:
    """The TickResults of a run's ticks.jsonl in file order (drops have no picture), each with its segmentation
    labels where the run saved them (RUN/seg/, output.save_seg)."""
    seg_dir = Path(ticks_path).parent / SEG_DIR
    out = []
    with open(ticks_path) as f:
        for line in f:
            record = json.loads(line)
            if record.get("kind") == "tick":
                out.append(read_seg(seg_dir, TickResult.from_json(record)))
    return out


def run_frames(ticks: list[TickResult], frame_sets: Iterable[FrameSet]) -> Iterator[tuple[FrameSet, TickResult]]:
    """Each tick with the frame set it ran on (same scene and sensor timestamp), in the source's order; frame
    sets without a tick (dropped, or not in the run) are skipped."""
    by_key = {(t.scene, t.timestamp_us): t for t in ticks}
    for frame_set in frame_sets:
        result = by_key.pop((frame_set.scene, frame_set.timestamp_us), None)
        if result is not None:
            yield frame_set, result
        if not by_key:
            return


def fps_of(ticks: list[TickResult]) -> float:
    """The run's own rate: ticks per second of sensor time (12 for sweeps, 2 for keyframes), at least 1."""
    if len(ticks) < 2:
        return 1.0
    gaps = np.diff(sorted(t.timestamp_us for t in ticks))
    gap = float(np.median(gaps[gaps > 0])) if np.any(gaps > 0) else 1e6
    return max(1.0, round(1e6 / gap, 2))
