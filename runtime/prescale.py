"""Shrink full-resolution camera images to the size the model's rectifier would shrink them to,
before they go into Ray's object store.

The rectifier (perception/rectify.py) first shrinks each image, anti-aliased, to about the canonical
scale and then warps it. Doing that shrink before `ray.put` gives the backbone the very same pixels
(the rectifier then finds nothing to shrink) while the object store copies ~16x fewer bytes: a
nuScenes set is 26 MB at 1600x900, and its put cost the driver 15-90 ms of CPU per tick on 2 busy
cores (bench/runtime.py, cpu_ms_per_tick_by_process). A camera is left as it is whenever the
rectifier would not reproduce the same input from the shrunk image.
"""
from __future__ import annotations

import warnings
from dataclasses import replace
from typing import Any

import numpy as np


class Prescaler:
    """FrameSet -> the same FrameSet with each camera shrunk as the rectifier would (intrinsics scaled)."""

    def __init__(self, rectify_cfg: Any, workers: int = 1):
        self.cfg = rectify_cfg
        self._pool = None  # workers > 1: a set's cameras shrink in that many threads at once (torch frees the GIL)
        if workers > 1:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(workers, thread_name_prefix="bevstream-prescale")

    def needed_size(self, k: np.ndarray, full_size: tuple[int, int]) -> tuple[int, int]:
        """(h, w) of an image of `full_size` with intrinsic `k` that the rectifier actually uses: a source
        may decode at any size at least this big (NuScenesSource.decode_for) without changing the input."""
        from perception.rectify import prescale_size

        return prescale_size(self.cfg, np.asarray(k, np.float64), tuple(full_size))

    def shrink(self, image: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """(H, W, 3) uint8 + (3, 3) K -> shrunk image and its K, or None to keep the camera as it is."""
        import torch
        import torch.nn.functional as F

        from perception.rectify import prescale_size
        from schema.camera import scale_intrinsic

        h, w = image.shape[:2]
        pre = prescale_size(self.cfg, np.asarray(k, np.float64), (h, w))
        if pre[0] >= h or pre[1] >= w:  # the rectifier never enlarges: nothing to gain
            return None
        k_pre = scale_intrinsic(np.asarray(k, np.float64), pre[1] / w, pre[0] / h)
        if prescale_size(self.cfg, k_pre, pre) != pre:  # the rectifier would shrink again: not the same input
            return None
        with warnings.catch_warnings():  # a source's read-only array: only read here
            warnings.simplefilter("ignore", UserWarning)
            x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None]  # (1, 3, H, W) uint8, channels-last view
        x = F.interpolate(x, size=pre, mode="bilinear", align_corners=False, antialias=True)  # as the rectifier does
        return np.ascontiguousarray(x[0].permute(1, 2, 0).numpy()), k_pre  # (h, w, 3) uint8

    def _camera(self, c: Any) -> Any:
        img, k = c.image, np.asarray(c.intrinsic)
        fit = (isinstance(img, np.ndarray) and img.ndim == 3 and img.dtype == np.uint8 and img.shape[2] == 3
               and min(img.shape[:2]) >= 8 and k.shape == (3, 3) and bool(np.all(np.isfinite(k))) and k[0, 0] > 0)
        out = self.shrink(img, k) if fit else None  # bad input goes on as it is: the input check names it
        return c if out is None else replace(c, image=out[0], intrinsic=out[1])

    def __call__(self, fs: Any) -> Any:
        if self._pool is not None and len(fs.cameras) > 1:
            return replace(fs, cameras=tuple(self._pool.map(self._camera, fs.cameras)))
        return replace(fs, cameras=tuple(self._camera(c) for c in fs.cameras))
