"""The scene video (lab/video.py): a short run's MP4 has a frame per tick at the composite's size, read back
with imageio; ticks pair with their frame sets by scene and sensor time; the segmentation overlay colours pixels."""
from __future__ import annotations

import imageio.v2 as imageio
import numpy as np
from PIL import Image

from lab.video import MACRO_BLOCK, composite, fps_of, run_frames, write_video
from lab.viz import overlay_segmentation
from schema.results import DetectionArrays, TickResult
from tests.runtime.fakes import make_frame_set


def _tick(fs, seg: bool = False) -> TickResult:
    dets = DetectionArrays("ego", np.array([[8, 0, 0.8, 2, 4.5, 1.6, 0, 2, 0]], np.float32), [0.9], [0], ["car"])
    labels = np.full((len(fs.cameras), 6, 10), 2, np.uint8) if seg else np.zeros((0, 6, 10), np.uint8)
    return TickResult(fs.oldest_timestamp_us, fs.ego_to_global, dets, dets.to_global(fs.ego_to_global), (), (),
                      fs.channels, labels, (), frame_id=fs.frame_id, scene=fs.scene, timestamp_us=fs.timestamp_us)


def test_a_short_runs_video_has_a_frame_per_tick_at_the_composite_size(tmp_path):
    sets = [make_frame_set(i, size=(90, 160)) for i in range(5)]
    ticks = [_tick(fs) for fs in sets if fs.frame_id != 2]  # frame set 2 was dropped: no picture
    pairs = list(run_frames(ticks, iter(sets)))
    assert [fs.frame_id for fs, _ in pairs] == [0, 1, 3, 4]
    frames = [composite(fs, result, tile_width=160) for fs, result in pairs]
    width, height = frames[0].size
    assert width % MACRO_BLOCK == 0 and height % MACRO_BLOCK == 0 and width > 3 * 160
    assert fps_of(ticks) == 12.0  # 83.3 ms apart in sensor time
    out = tmp_path / "scene.mp4"
    assert write_video(frames, out, fps=fps_of(ticks)) == 4
    reader = imageio.get_reader(out)
    assert reader.count_frames() == 4
    assert tuple(reader.get_meta_data()["size"]) == (width, height)
    assert reader.get_data(0).shape == (height, width, 3)


def test_segmentation_overlay_colours_labelled_pixels_only():
    img = Image.new("RGB", (40, 20), (0, 0, 0))
    labels = np.zeros((2, 4), np.uint8)
    labels[:, 2:] = 2  # road on the right half
    out = np.asarray(overlay_segmentation(img, labels))
    assert not out[:, :20].any() and out[:, 20:].any()
    fs = make_frame_set(0, size=(20, 40))
    plain = np.asarray(composite(fs, _tick(fs), tile_width=80))
    with_seg = np.asarray(composite(fs, _tick(fs, seg=True), tile_width=80))
    assert plain.shape == with_seg.shape and not np.array_equal(plain, with_seg)
