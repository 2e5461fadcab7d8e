"""Detections: the detection head's per-frame result, a set of same-length fields indexable together."""
from __future__ import annotations

from dataclasses import dataclass

import torch
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
