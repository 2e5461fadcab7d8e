"""JPEG camera images at the size the model uses: libjpeg-turbo (simplejpeg) with DCT-scaled decoding.

A 1600x900 nuScenes image decoded at 1/2 costs about a quarter of a full decode. Decoding can happen
at once (`decode_jpeg_at`) or later, elsewhere: `encoded_jpeg` reads only the header and returns an
`EncodedImage` that `decode_encoded` turns into the very same pixels in another process.
simplejpeg is strict: corrupt data raises ValueError instead of decoding to grey.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from schema.messages import EncodedImage


def is_jpeg(data: bytes) -> bool:
    import simplejpeg

    return simplejpeg.is_jpeg(data)


def jpeg_size(data: bytes) -> tuple[int, int]:
    """(H, W) of a JPEG from its header; raises ValueError if it has none."""
    import simplejpeg

    h, w, _, _ = simplejpeg.decode_jpeg_header(data)
    return int(h), int(w)


def dct_scale(full: tuple[int, int], min_size_for: Callable[[tuple[int, int]], tuple[int, int]] | None) -> int:
    """The coarsest of libjpeg's scales 1, 2, 4, 8 whose decode of a `full` (H, W) image is still at least
    `min_size_for(full)` big (1 without a need). Pixel centres keep the convention of
    `schema.camera.scale_intrinsic` (a 1/s image's pixel i covers source pixels s*i .. s*i+s-1)."""
    s = 1
    if min_size_for is not None:
        nh, nw = min_size_for(full)
        h, w = full
        while s < 8 and -(-h // (2 * s)) >= nh and -(-w // (2 * s)) >= nw:
            s *= 2
    return s


def decode_jpeg_at(data: bytes, full: tuple[int, int], s: int) -> np.ndarray:
    """JPEG bytes of a `full` (H, W) image -> (ceil(H/s), ceil(W/s), 3) uint8 RGB; ValueError if corrupt."""
    import simplejpeg

    # min_height/min_width of the 1/s size: libjpeg-turbo's coarsest scale still that big is exactly 1/s
    return simplejpeg.decode_jpeg(data, colorspace="RGB", min_height=-(-full[0] // s), min_width=-(-full[1] // s),
                                  strict=True)


def encoded_jpeg(data: bytes, min_size_for: Callable[[tuple[int, int]], tuple[int, int]] | None = None
                 ) -> tuple[EncodedImage, tuple[int, int]]:
    """JPEG bytes -> (an EncodedImage to decode later at the DCT scale `dct_scale` picks, the file's full (H, W)).
    Reads the header only; ValueError if there is none."""
    full = jpeg_size(data)
    s = dct_scale(full, min_size_for)
    return EncodedImage(data, (-(-full[0] // s), -(-full[1] // s), 3), s), full


def decode_encoded(image: EncodedImage) -> np.ndarray:
    """An EncodedImage -> its (H, W, 3) uint8 pixels; ValueError if the data is corrupt or does not decode to
    the promised shape."""
    full = (image.shape[0] * image.scale, image.shape[1] * image.scale)  # any full size with that 1/s size decodes alike
    out = decode_jpeg_at(image.data, full, image.scale)
    if out.shape != tuple(image.shape):
        raise ValueError(f"JPEG decoded to {out.shape}, expected {tuple(image.shape)}")
    return out
