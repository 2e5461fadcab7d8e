"""replay/jpeg.py: an image left encoded (`encoded_jpeg`) decodes later (`decode_encoded`) to exactly the pixels
of decoding at once at the same DCT scale; corrupt data raises ValueError."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from replay.jpeg import dct_scale, decode_encoded, decode_jpeg_at, encoded_jpeg
from schema.messages import EncodedImage


def _jpeg(h: int, w: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
    img = np.kron(base, np.ones((8, 8, 1), np.uint8))[:h, :w]  # blocky: survives compression recognisably
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


@pytest.mark.parametrize("need", [None, (450, 800), (226, 402), (200, 300), (90, 100)])
def test_encoded_image_decodes_to_the_pixels_of_an_immediate_decode(need):
    data = _jpeg(900, 1600)
    needed = None if need is None else (lambda full: need)
    image, full = encoded_jpeg(data, needed)
    s = dct_scale(full, needed)
    assert full == (900, 1600) and image.scale == s and isinstance(image, EncodedImage)
    at_once = decode_jpeg_at(data, full, s)
    assert image.shape == at_once.shape  # promised before decoding: the stage knows the size ahead
    if need is not None:
        assert at_once.shape[0] >= need[0] and at_once.shape[1] >= need[1]  # never smaller than needed
        assert s == 8 or at_once.shape[0] // 2 < need[0] or at_once.shape[1] // 2 < need[1]  # and the coarsest
    np.testing.assert_array_equal(decode_encoded(image), at_once)


def test_odd_sizes_round_up_like_libjpeg():
    data = _jpeg(901, 1599)
    image, full = encoded_jpeg(data, lambda full: (100, 100))
    assert image.scale == 8 and image.shape == (113, 200, 3)
    np.testing.assert_array_equal(decode_encoded(image), decode_jpeg_at(data, full, 8))


def test_corrupt_or_mislabelled_data_raises_value_error():
    data = _jpeg(64, 96)
    with pytest.raises(ValueError):
        encoded_jpeg(b"not a jpeg at all")
    image, _ = encoded_jpeg(data)
    broken = EncodedImage(data[: len(data) // 2], image.shape, image.scale)  # header fine, data cut short
    with pytest.raises(ValueError):
        decode_encoded(broken)
    with pytest.raises(ValueError, match="expected"):
        decode_encoded(EncodedImage(data, (32, 96, 3), 1))  # decodes, but not to the shape it claims
