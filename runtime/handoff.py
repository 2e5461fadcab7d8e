"""What crosses from a source or the ingest actor to the tick scheduler: a frame set staged in the object
store (`Staged`), the drop record of a set that will not tick (`drop_for`), and the end marker."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from schema.messages import FrameSet, StageTiming
from schema.results import DropRecord

INGEST_END = "__end__"
NO_IMAGE = np.zeros((0, 0, 3), np.uint8)  # frame sets leave the ingest actor without pixels: those go by reference


@dataclass
class Staged:
    """A frame set from the ingest actor, its pixels already in the object store: either as one list
    of images (the set goes through the backbone at once), or as the per-camera backbone outputs the
    ingest actor started as each camera arrived (`pipeline.live_encode: camera`)."""

    fs: FrameSet  # from the ingest actor its cameras carry no pixels
    images_ref: Any = None  # ObjectRef of the list of (H, W, 3) images, CAMERA_CHANNELS order of fs.cameras
    camera_refs: tuple = ()  # ObjectRefs of stages.CameraFeatures, one per camera of fs.cameras (same order)
    checked: bool = True  # False: the input checks are still to run (SourceFeeder; fs keeps its pixels)

    @property
    def frame_id(self) -> int:
        return self.fs.frame_id


def drop_for(fs: Any, reason: str, detail: str, extra: tuple[StageTiming, ...] = ()) -> DropRecord:
    return DropRecord(reason, detail, tuple(fs.missing), frame_id=fs.frame_id, scene=fs.scene, timestamp_us=fs.timestamp_us,
                      sample_token=fs.sample_token, timings=tuple(fs.timings) + tuple(extra))
