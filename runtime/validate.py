"""Input checks at the runtime's door: a bad frame set becomes a drop record, the stream goes on."""
from __future__ import annotations

import numpy as np

from schema.messages import CAMERA_CHANNELS, EncodedImage, FrameSet


def check_frame_set(fs: FrameSet, min_cameras: int = 1) -> tuple[str, str] | None:
    """None if the set can run, else (reason, detail) with reason 'bad_input' or 'late_camera'."""
    if not fs.ego_to_global.is_finite():
        return "bad_input", "ego_to_global pose is not finite"
    kin = fs.kinematics.as_array()
    if not np.all(np.isfinite(kin)):
        return "bad_input", "ego kinematics are not finite"
    seen: set[str] = set()
    for cam in fs.cameras:
        where = f"{cam.channel}"
        if cam.channel not in CAMERA_CHANNELS:
            return "bad_input", f"unknown camera channel {cam.channel!r}"
        if cam.channel in seen:
            return "bad_input", f"camera {where} appears twice"
        seen.add(cam.channel)
        img = cam.image
        if isinstance(img, EncodedImage):  # a replay's JPEG, decoded by the backbone stage (a corrupt one goes missing there)
            if not img.data or len(img.shape) != 3 or img.shape[2] != 3 or min(img.shape[:2]) < 8:
                return "bad_input", f"{where}: encoded image of shape {img.shape} and {len(img.data)} bytes"
        elif not isinstance(img, np.ndarray):
            return "bad_input", f"{where}: image is {type(img).__name__}, expected a numpy array"
        elif img.ndim != 3 or img.shape[2] != 3 or img.shape[0] < 8 or img.shape[1] < 8:
            return "bad_input", f"{where}: image shape {img.shape}, expected (H, W, 3)"
        elif img.dtype != np.uint8:
            return "bad_input", f"{where}: image dtype {img.dtype}, expected uint8"
        k = np.asarray(cam.intrinsic)
        if k.shape != (3, 3) or not np.all(np.isfinite(k)) or k[0, 0] <= 0 or k[1, 1] <= 0:
            return "bad_input", f"{where}: intrinsic matrix is not a finite (3, 3) with positive focal lengths"
        h, w = img.shape[:2]
        if not (w / 4 < k[0, 2] < 3 * w / 4 and h / 4 < k[1, 2] < 3 * h / 4):
            # the principal point of a real lens sits near the image centre: far off it, the image is not
            # the size its calibration was made for (resized, cropped, transposed) and the model's rays are wrong
            return "bad_input", (f"{where}: image {w}x{h} does not match its intrinsics (principal point "
                                 f"{k[0, 2]:.0f}, {k[1, 2]:.0f} is not in the middle half of the image)")
        if not cam.sensor_to_ego.is_finite():
            return "bad_input", f"{where}: sensor_to_ego pose is not finite"
    if len(fs.cameras) < min_cameras:
        return "late_camera", f"{len(fs.cameras)} camera(s) present, {min_cameras} needed; missing {list(fs.missing)}"
    return None
