"""Detections: the detection head's per-frame result, a set of same-length fields indexable together."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from pyquaternion import Quaternion
from torch import Tensor

from perception.boxes import BOX_DIM
from schema.classes import DETECTION_NAMES


@dataclass
class Detections:
    """boxes (N, 9) x, y, z, w, l, h, yaw, vx, vy in the ego frame; scores (N,); labels (N,) int64 into DETECTION_NAMES."""

    boxes: Tensor
    scores: Tensor
    labels: Tensor

    def __post_init__(self) -> None:
        if self.boxes.dim() != 2 or self.boxes.shape[1] != BOX_DIM:
            raise ValueError(f"Detections: boxes must be (N, {BOX_DIM}), got {tuple(self.boxes.shape)}")
        n = self.boxes.shape[0]
        if self.scores.shape != (n,) or self.labels.shape != (n,):
            raise ValueError(
                f"Detections: scores {tuple(self.scores.shape)} and labels {tuple(self.labels.shape)} must be ({n},)")
        if n and (int(self.labels.min()) < 0 or int(self.labels.max()) >= len(DETECTION_NAMES)):
            raise ValueError(f"Detections: labels must index DETECTION_NAMES (0..{len(DETECTION_NAMES) - 1})")

    @classmethod
    def empty(cls, device=None) -> "Detections":
        return cls(torch.zeros(0, BOX_DIM, device=device), torch.zeros(0, device=device),
                   torch.zeros(0, dtype=torch.int64, device=device))

    def __len__(self) -> int:
        return self.boxes.shape[0]

    def __getitem__(self, item) -> "Detections":
        """dets[mask], dets[indices], dets[a:b]: the same selection of every field."""
        if isinstance(item, int):
            item = slice(item, item + 1 if item != -1 else None)
        return Detections(self.boxes[item], self.scores[item], self.labels[item])

    @property
    def names(self) -> list[str]:
        return [DETECTION_NAMES[i] for i in self.labels.tolist()]

    def to(self, device) -> "Detections":
        return Detections(self.boxes.to(device), self.scores.to(device), self.labels.to(device))

    def to_global(self, ego_to_global) -> list[dict]:
        """Boxes in global coordinates from the ego pose (schema.messages.Pose, ego -> global).

        Returns one dict per box with the nuScenes submission fields: translation (3,), size (w, l, h),
        rotation (w, x, y, z), velocity (vx, vy) global, detection_name, detection_score.
        """
        q_pose: Quaternion = ego_to_global.rotation
        rot = q_pose.rotation_matrix  # (3, 3)
        t = np.asarray(ego_to_global.translation, dtype=np.float64)
        boxes = self.boxes.detach().cpu().double().numpy()
        scores = self.scores.detach().cpu().double().numpy()
        out = []
        for b, s, name in zip(boxes, scores, self.names):
            centre = rot @ b[:3] + t
            q = q_pose * Quaternion(axis=(0.0, 0.0, 1.0), angle=float(b[6]))
            vel = rot @ np.array([b[7], b[8], 0.0])
            out.append({
                "translation": centre.tolist(),
                "size": b[3:6].tolist(),
                "rotation": list(q.elements),
                "velocity": vel[:2].tolist(),
                "detection_name": name,
                "detection_score": float(s),
            })
        return out
