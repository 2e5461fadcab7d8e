"""Image damage for fault injection (replay/faults.py): JPEG bytes overwritten or cut short, decoded as the
replay decodes (simplejpeg strict=True, replay/nuscenes/source.py), and images at a size their calibration
was not made for. Pure numpy + simplejpeg."""
from __future__ import annotations

import numpy as np
import simplejpeg


def _scan_start(data: bytes) -> int:
    """Offset of the entropy-coded data (just past the SOS segment)."""
    i = data.find(b"\xff\xda")
    if i < 0:
        raise ValueError("no SOS marker: not a baseline JPEG")
    return i + 2 + int.from_bytes(data[i + 2:i + 4], "big")


def corrupt_jpeg(data: bytes, rng: np.random.Generator, n: int = 16) -> bytes:
    """Overwrite `n` bytes of the scan with garbage that holds a stray RST marker: headers intact, so
    Pillow decodes it (to garbage), while a strict decoder reports the corrupt data and raises."""
    start, end = _scan_start(data), len(data) - 2
    n = max(4, min(n, (end - start) // 2))
    at = int(rng.integers(start, end - n))
    junk = rng.integers(0, 255, n, dtype=np.uint8)  # 0..254: no 0xFF but the marker's
    junk[n // 2], junk[n // 2 + 1] = 0xFF, 0xD3
    return data[:at] + junk.tobytes() + data[at + n:]


def truncate_jpeg(data: bytes, rng: np.random.Generator) -> bytes:
    """The JPEG cut somewhere in its scan (a partial transfer)."""
    start = _scan_start(data)
    return data[:int(rng.integers(start + 1, max(start + 2, len(data) - 2)))]


def strict_decode(data: bytes) -> np.ndarray:
    """Decode as the replay does (libjpeg-turbo, strict): raises ValueError on corrupt or truncated data."""
    return simplejpeg.decode_jpeg(data, colorspace="RGB", strict=True)


def wrong_size(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The image at a size its intrinsics were not made for: half size, double size or transposed."""
    kind = int(rng.integers(3))
    if kind == 0:
        return np.ascontiguousarray(image[::2, ::2])
    if kind == 1:
        return np.ascontiguousarray(image.repeat(2, axis=0).repeat(2, axis=1))
    return np.ascontiguousarray(image.transpose(1, 0, 2))


def damaged_jpeg(image: np.ndarray, kind: str, rng: np.random.Generator) -> bytes:
    """`image` as a camera link would carry it (JPEG, quality 90), then 'corrupt' or 'truncated'."""
    data = simplejpeg.encode_jpeg(np.ascontiguousarray(image), quality=90, colorspace="RGB")
    return corrupt_jpeg(data, rng) if kind == "corrupt" else truncate_jpeg(data, rng)
