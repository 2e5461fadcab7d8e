"""Every frame's boxes as they reach the box tracker, recorded during a model run (`RecordingFilter`) and saved,
so that `bevstream calibrate` can replay the tracker under other levels without running the model again."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from perception.tracking import TickFilter
from schema.messages import Pose


@dataclass(frozen=True)
class TickBoxes:
    """One frame's boxes as the tracker receives them, and where and when they were seen."""

    new_scene: bool  # the tracks start afresh at this frame
    timestamp_s: float
    ego_to_global: Pose
    sample_token: str | None  # a keyframe's sample; None for a sweep (tracked, not scored)
    boxes: Tensor  # (K, 9) ego frame, after the NMS
    scores: Tensor  # (K,)
    labels: Tensor  # (K,) class indices


class RecordingFilter:
    """A tick's track filter (perception.tracking.TickFilter) that first appends the boxes it is given to `log`
    as TickBoxes; it returns what the filter returns, so the run it records is unchanged."""

    def __init__(self, inner: TickFilter, new_scene: bool, ego_to_global, sample_token: str | None, log: list):
        self.inner, self.new_scene, self.ego_to_global, self.sample_token, self.log = \
            inner, new_scene, ego_to_global, sample_token, log

    def __call__(self, boxes: Tensor, scores: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        self.log.append(TickBoxes(self.new_scene, self.inner.timestamp_s, self.ego_to_global, self.sample_token,
                                  boxes.detach().clone(), scores.detach().clone(), labels.detach().clone()))
        return self.inner(boxes, scores, labels)

    @property
    def track_ids(self):
        """The wrapped filter's track ids of the boxes it was given (None until called)."""
        return self.inner.track_ids


def ticks_to_file(ticks: Sequence[TickBoxes], path) -> None:
    """Recorded frames -> a torch file (poses as (4, 4) matrices), so a later calibration need not run the model."""
    torch.save([{**dataclasses.asdict(t), "ego_to_global": np.asarray(t.ego_to_global.matrix)} for t in ticks], path)


def ticks_from_file(path) -> list[TickBoxes]:
    """ticks_to_file's frames back."""
    try:
        rows = torch.load(path, weights_only=False)
        return [TickBoxes(**{**row, "ego_to_global": Pose.from_matrix(np.asarray(row["ego_to_global"]))}) for row in rows]
    except Exception as exc:  # a file of another kind fails in pickle, torch or the rows
        raise ValueError(f"{path}: not the frames file bevstream calibrate saves (ticks.pt): {exc}") from exc
